"""Where every Python process of a run spends its time, without ptrace (py-spy's need, which a container may refuse):
put this folder first on PYTHONPATH and set HF_DIS_STACK_SAMPLES to a folder, and each Python process started then
(spawned children and loader workers too) samples its main thread's stack every 50 ms in a daemon thread and keeps
`stacks-PID.txt` there up to date: its command line, then collapsed stacks (`file:function;...;file:function count`,
outermost first), rewritten every 10 s and at exit. A main thread inside C code that holds the GIL is sampled when
it lets go, so such waits are counted against the Python line after them. Python loads one `sitecustomize`: this one
replaces the system's (Debian's only installs an apport hook) for those processes.

    HF_DIS_STACK_SAMPLES=stacks PYTHONPATH=benchmarks/stack_sampling:$PYTHONPATH python benchmarks/reproduce.py ...
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

SAMPLE_EVERY_S = 0.05
WRITE_EVERY_S = 10.0


def main_thread_stack() -> str:
    """The main thread's Python stack as `file:function;...` (outermost first)."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    names = []
    while frame is not None:
        names.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_code.co_name}")
        frame = frame.f_back
    return ";".join(reversed(names))


def write_samples(path: Path, samples: Counter) -> None:
    lines = [" ".join(sys.argv)[:500]] + [f"{stack} {count}" for stack, count in samples.most_common()]
    temporary = path.with_suffix(".tmp")
    temporary.write_text("\n".join(lines) + "\n")
    temporary.replace(path)  # a reader never sees half a file


def start(folder: str) -> None:
    """Sample this process's main thread into `folder`/stacks-PID.txt until it exits."""
    path = Path(folder) / f"stacks-{os.getpid()}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    samples: Counter = Counter()

    def sample_forever() -> None:
        last_write = time.monotonic()
        while True:
            time.sleep(SAMPLE_EVERY_S)
            samples[main_thread_stack()] += 1
            if time.monotonic() - last_write > WRITE_EVERY_S:
                write_samples(path, samples)
                last_write = time.monotonic()

    def write_at_exit() -> None:
        if os.getpid() == pid:  # not in a forked child, which has no sampler and would overwrite the parent's file
            write_samples(path, samples)

    pid = os.getpid()
    threading.Thread(target=sample_forever, name="hf_dis-stack-sampler", daemon=True).start()
    atexit.register(write_at_exit)


if os.environ.get("HF_DIS_STACK_SAMPLES"):
    start(os.environ["HF_DIS_STACK_SAMPLES"])
