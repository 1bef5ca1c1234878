"""A run's `output_dir`: refused when it holds another run, and checkpoints that are either whole or recognised as not.

- `prepare_run_folder` (called by `GuardedTraining.train` before anything is written): a folder that already holds a
  run (checkpoints, saved weights or a model card) is refused unless the run resumes or `overwrite_output_dir=True`
  (which removes the old checkpoints, so that a later `resume_from_checkpoint=True` cannot pick one of them). It
  resolves `resume_from_checkpoint=True` to the newest *complete* checkpoint, warning about each newer one it skips,
  and refuses a named checkpoint that is damaged, naming the file and the damage.
- `run_folder_lock`: one run at a time per folder (a lock file naming the process; a dead process's lock is taken
  over with a warning).
- `CheckpointMarkerCallback` writes `hf_dis_checkpoint.json` into each checkpoint once the Trainer has written all of
  it (its `on_save` runs after the save): the name and size of every file. A save killed half-way leaves no marker;
  a file truncated or lost later no longer matches it.
- The marker also records the run's settings (`hf_dis.trainer.run_settings`), compared when the run resumes.
- Checkpoints without a marker (from a plain Trainer, or an hf_dis older than the marker) are checked by their
  structure: `trainer_state.json` parses, the weights' header reads, the optimizer and scheduler states exist.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open
from transformers import TrainerCallback

from hf_dis.trainer.internals import CHECKPOINT_PATTERN, checkpoint_folder

logger = logging.getLogger(__name__)

#: Written last into every checkpoint: {"files": {relative path: size in bytes}}.
MARKER_NAME = "hf_dis_checkpoint.json"
#: Files that say a folder holds a finished or running training run (checkpoints aside).
RUN_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "trainer_state.json",
    "README.md",
)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
OPTIMIZER_FILES = ("optimizer.pt", "optimizer.bin")
SCHEDULER_NAME = "scheduler.pt"
TRAINER_STATE_NAME = "trainer_state.json"


@dataclass
class RunFolderOptions:
    """The option of `prepare_run_folder`, mixed into hf_dis's training arguments (transformers 5 dropped it)."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Train into an output_dir that holds another run: its checkpoints are removed, its other files "
            "overwritten. Off: such a folder is refused unless the run resumes."
        },
    )
    resume_with_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "Resume a checkpoint with other run settings than it recorded (teacher, temperature, loss "
            "weights, sampler, K, student architecture): each change is logged and written to the card. Off: refused."
        },
    )


def checkpoints_in(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, newest (largest N) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(match.group(1)), path) for path in folder.iterdir() if (match := CHECKPOINT_PATTERN.match(path.name))]
    return [path for _, path in sorted(found, reverse=True) if path.is_dir()]


def write_marker(checkpoint: str | os.PathLike, run: dict[str, Any] | None = None) -> None:
    """Record every file of `checkpoint` with its size, and the `run`'s settings (`hf_dis.trainer.run_settings`),
    atomically: a temporary file renamed into place."""
    folder = Path(checkpoint)
    files = {
        str(path.relative_to(folder)): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MARKER_NAME and not path.name.startswith(f".{MARKER_NAME}")
    }
    temporary = folder / f".{MARKER_NAME}.tmp"
    record = {"files": files} if run is None else {"files": files, "run": run}
    temporary.write_text(json.dumps(record, indent=1, default=str))
    os.replace(temporary, folder / MARKER_NAME)


def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """What makes `checkpoint` unusable for resuming, in words naming the file; None when it is whole."""
    folder = Path(checkpoint)
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not any(folder.iterdir()):
        return f"{folder} is empty (a save that was interrupted before it wrote anything)"
    marker = folder / MARKER_NAME
    if marker.is_file():
        try:
            files = json.loads(marker.read_text())["files"]
        except (ValueError, KeyError, TypeError) as error:
            return f"{marker} is damaged ({type(error).__name__}: {error})"
        for name, size in files.items():
            path = folder / name
            if not path.is_file():
                return f"{path} is missing (listed in {MARKER_NAME} when the checkpoint was written)"
            if path.stat().st_size != size:
                return f"{path} has {path.stat().st_size} bytes, {size} when it was written (truncated or replaced)"
    return _structure_problem(folder)


def _structure_problem(folder: Path) -> str | None:
    """The checks that need no marker: the trainer state parses, the weights' header reads, the optimizer and
    scheduler states exist (resuming without them would silently restart the optimizer)."""
    state = folder / TRAINER_STATE_NAME
    if not state.is_file():
        return f"{state} is missing (the Trainer writes it last: the save was interrupted)"
    try:
        json.loads(state.read_text())
    except ValueError as error:
        return f"{state} is damaged (not valid JSON: {error})"
    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        return f"{folder} holds no model weights ({' or '.join(WEIGHT_FILES)})"
    if weights.suffix == ".safetensors":
        try:
            with safe_open(str(weights), framework="pt") as reader:
                reader.keys()
        except Exception as error:  # safetensors raises its own error type for every kind of damage
            return f"{weights} is damaged ({type(error).__name__}: {error})"
    if not any((folder / name).is_file() for name in OPTIMIZER_FILES):
        return (
            f"{folder / OPTIMIZER_FILES[0]} is missing: resuming would restart the optimizer from nothing (a "
            "checkpoint saved with save_only_model=True cannot be resumed)"
        )
    if not (folder / SCHEDULER_NAME).is_file():
        return f"{folder / SCHEDULER_NAME} is missing: resuming would restart the learning-rate schedule"
    return None


def newest_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest whole checkpoint of `output_dir`, warning about each newer one skipped; None when there is none."""
    for checkpoint in checkpoints_in(output_dir):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        logger.warning(
            "skipping %s when resuming: %s. Resuming from the newest complete checkpoint.", checkpoint.name, problem
        )
    return None


def prepare_run_folder(
    output_dir: str, resume_from_checkpoint: str | bool | None, overwrite: bool, is_main: bool, own: bool = False
) -> str | None:
    """Check `output_dir` before a run writes to it; returns the checkpoint to resume from (None: a fresh run).
    `own`: the folder holds this trainer's own earlier run (`train()` called again), replaced as with `overwrite`.

    Raises:
        ValueError: the folder holds another run and neither resuming nor `overwrite` was asked for; a named
            checkpoint is damaged; `resume_from_checkpoint=True` finds no checkpoint, or none complete.
    """
    if resume_from_checkpoint is True:
        checkpoints = checkpoints_in(output_dir)
        if not checkpoints:
            raise ValueError(f"resume_from_checkpoint=True, but {output_dir} holds no checkpoint-N folder to resume.")
        checkpoint = newest_complete_checkpoint(output_dir)
        if checkpoint is None:
            raise ValueError(
                f"resume_from_checkpoint=True, but no checkpoint in {output_dir} is complete "
                f"({', '.join(path.name for path in checkpoints)}); see the warnings above for what each lacks."
            )
        return checkpoint
    if resume_from_checkpoint:
        problem = checkpoint_problem(resume_from_checkpoint)
        if problem is not None:
            raise ValueError(f"cannot resume from {resume_from_checkpoint}: {problem}.")
        return str(resume_from_checkpoint)
    previous = previous_run_files(output_dir)
    if previous and not (overwrite or own):
        raise ValueError(
            f"output_dir {output_dir} already holds a run ({', '.join(previous)}): training into it would mix the two "
            "runs' checkpoints and overwrite its model and card. Choose another output_dir, resume that run "
            "(resume_from_checkpoint=True), or set overwrite_output_dir=True to replace it."
        )
    if previous and is_main:
        old = checkpoints_in(output_dir)
        for checkpoint in old:
            shutil.rmtree(checkpoint)
        logger.warning(
            "%s: replacing the run in %s (removed %d checkpoint folders; its other files are overwritten as this run "
            "writes them).", "train() again" if own else "overwrite_output_dir=True", output_dir, len(old),
        )  # fmt: skip
    return None


#: Held in an output_dir while a run trains into it: {"pid", "host", "started"}.
LOCK_NAME = ".hf_dis_run.lock"


def _holder_is_alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote a lock still runs (a lock from another host is taken as alive)."""
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@contextmanager
def run_folder_lock(output_dir: str | os.PathLike) -> Iterator[None]:
    """Hold `output_dir`'s run lock for the block: a second run into a folder a live run holds is refused; a lock
    whose process is gone (a killed run) is taken over with a warning. Released on leaving the block."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started})
    for _ in range(2):  # a stale lock is removed once, then taken
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                holder = json.loads(path.read_text())
            except (OSError, ValueError):
                holder = {}
            if holder and _holder_is_alive(holder):
                raise ValueError(
                    f"output_dir {output_dir} is in use by another run (process {holder.get('pid')} on "
                    f"{holder.get('host')}, started {holder.get('started')}): two runs in one folder would interleave "
                    f"their checkpoints. Wait for it, choose another output_dir, or remove {path} if that run is gone."
                ) from None
            logger.warning("taking over %s, left by a run that is gone (%s).", path, holder or "unreadable")
            path.unlink(missing_ok=True)
    else:
        raise ValueError(f"could not take the run lock {path}: another run took it at the same time.")
    with os.fdopen(descriptor, "w") as handle:
        handle.write(record)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def previous_run_files(output_dir: str | os.PathLike) -> list[str]:
    """The names in `output_dir` that belong to an earlier run: its checkpoints and its saved model or card."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    return [path.name for path in checkpoints_in(folder)[::-1]] + [
        name for name in RUN_FILES if (folder / name).exists()
    ]


class CheckpointMarkerCallback(TrainerCallback):
    """Writes the completion marker into each checkpoint the Trainer has just saved (on the main process, once every
    process has written its part: `wait_for_everyone` is the accelerator's barrier)."""

    def __init__(
        self, wait_for_everyone: Callable[[], None], run_settings: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        self.wait_for_everyone = wait_for_everyone
        self.run_settings = run_settings

    def on_save(self, args, state, control, **kwargs):
        self.wait_for_everyone()
        if state.is_world_process_zero:
            checkpoint = checkpoint_folder(args.output_dir, state.global_step)
            if checkpoint.is_dir():
                write_marker(checkpoint, None if self.run_settings is None else self.run_settings())
        return control
