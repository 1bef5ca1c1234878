"""A stand-in Hugging Face Hub on 127.0.0.1: the endpoints `huggingface_hub` uses to create a repo and commit files
(every file declared a "regular" upload, sent inline). Point `HF_ENDPOINT` at `server.url` so that the real client
code runs; `server.repos[repo_id]` holds what arrived ({path: bytes}), `server.requests` the calls made."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandInHub:
    def __init__(self, *, fail_commits: bool = False, require_token: bool = True) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_commits = fail_commits
        self.require_token = require_token
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandInHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status >= 400:
                    self.send_header("X-Error-Message", body.get("error", ""))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hub.requests.append(("POST", self.path))
                if hub.require_token and not self.headers.get("Authorization"):
                    return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                if self.path == "/api/repos/create":
                    request = json.loads(body)
                    repo_id = f"{request.get('organization') or 'tester'}/{request['name']}"
                    hub.repos.setdefault(repo_id, {})
                    return self._reply(200, {"url": f"{hub.url}/{repo_id}", "name": repo_id})
                if self.path == "/api/validate-yaml":  # the client checks a README's metadata before uploading it
                    return self._reply(200, {"errors": [], "warnings": []})
                if "/preupload/" in self.path:
                    files = json.loads(body)["files"]
                    return self._reply(
                        200,
                        {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                    )
                if "/commit/" in self.path:
                    if hub.fail_commits:
                        return self._reply(400, {"error": "stand-in Hub: commit refused"})  # 5xx would be retried
                    repo_id = self.path.split("/api/models/")[1].split("/commit/")[0]
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            value = item["value"]
                            hub.repos[repo_id][value["path"]] = base64.b64decode(value["content"])
                    return self._reply(
                        200,
                        {"commitUrl": f"{hub.url}/{repo_id}/commit/1", "commitOid": "1" * 40, "pullRequestUrl": None},
                    )
                return self._reply(404, {"error": f"stand-in Hub: no endpoint {self.path}"})

        return Handler
