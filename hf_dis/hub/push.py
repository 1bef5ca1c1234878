"""Publishing a trained student's folder: re-render its card (`write_card`) and upload the folder to a Hub repo in one
commit (`push_student`), checking first what can be checked without the network, so that a bad folder uploads
nothing. `DistillationTrainer.push_to_hub()` does the same from a trainer; these serve `hf-dis card` / `hf-dis push`
on a finished run's output folder."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import huggingface_hub
from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.errors import HfHubHTTPError
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_dis.hub.card import StudentCardData, render_card

#: Any of these makes a folder a saved model (with config.json).
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: Left out of the upload: checkpoints (resumable training state, large), logs, and private files.
IGNORED = [f"{PREFIX_CHECKPOINT_DIR}-*", f"{PREFIX_CHECKPOINT_DIR}-*/**", "runs/**", "_*", ".*"]


def _network_errors() -> tuple[type[Exception], ...]:
    """The errors of an unreachable network from the HTTP client huggingface_hub uses (httpx2, httpx or requests,
    by its version; requests' are OSErrors)."""
    errors: list[type[Exception]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def write_card(folder: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Render the card (README.md) of a student folder from its distillation_card.json; returns its path."""
    folder = Path(folder)
    path = folder / "README.md"
    render_card(StudentCardData.load(folder), repo_id=repo_id).save(path)
    return path


def push_student(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload distilled student (hf_dis)",
) -> CommitInfo:
    """Upload a trained student's folder (config, weights, README card, training arguments, results) to `repo_id`.

    Raises:
        FileNotFoundError: the folder holds no saved model, or no card data.
        ConnectionError: the Hub cannot be used (offline mode) or refused the repo or the upload; the Hub's own
            message is included (for a missing or invalid token: log in with `hf auth login`, or pass a token).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"{str(folder)!r} holds no saved model (config.json and one of {list(WEIGHT_FILES)}): pass the output_dir "
            "of a finished run (the trainer's save_model writes them)."
        )
    write_card(folder, repo_id)  # raises first when there is no card data: nothing is uploaded then
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise ConnectionError("HF_HUB_OFFLINE is set: pushing needs the Hugging Face Hub. Unset it to push.")
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=folder,
            commit_message=commit_message,
            revision=revision,
            ignore_patterns=IGNORED,
        )
    except (HfHubHTTPError, *_network_errors()) as error:  # the Hub's refusals, and a network down or unreachable
        hint = " Check the network and the endpoint (HF_ENDPOINT)."
        if isinstance(error, HfHubHTTPError):
            hint = ""
            if error.response is not None and error.response.status_code in (401, 403):
                hint = " Log in with `hf auth login`, set HF_TOKEN, or pass a token with write access."
        raise ConnectionError(
            f"pushing {str(folder)!r} to {repo_id!r} on {api.endpoint} failed: {error}.{hint}"
        ) from error
