"""`EvaluationCurve`: a run's metric against its training time, one point per evaluation, for time-to-accuracy.

The seconds are the training's own: the wall time since training began, less the time the evaluations took (their
`eval_runtime`), frozen when training ends (an evaluation after `train()` gets the training's total). They survive a
resume: the seconds at each checkpoint are kept, and a resumed run goes on from its checkpoint's. The points are
written to `output_dir/eval_curve.json` at every evaluation: `{"metric", "points": [[seconds, value, step], ...],
"checkpoints": {step: seconds}}`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from transformers import TrainerCallback

CURVE_FILE = "eval_curve.json"


#: The metrics a curve follows by default: the first of these an evaluation reports.
CURVE_METRICS = ("eval_accuracy", "eval_rank1")


class EvaluationCurve(TrainerCallback):
    """Record `(seconds of training, metrics[metric], step)` at every evaluation (see the module docstring); the
    metric defaults to the first of `CURVE_METRICS` the evaluation reports."""

    def __init__(self, metric: str | None = None) -> None:
        self.metric = metric
        self.points: list[list[float]] = []
        self.checkpoints: dict[str, float] = {}
        self._started: float | None = None
        self._ended: float | None = None
        self._offset = 0.0  # a resumed run's seconds at its checkpoint
        self._evaluating = 0.0  # seconds spent in evaluations since training began

    def seconds(self) -> float:
        """Seconds of training so far (0 before training began)."""
        if self._started is None:
            return 0.0
        now = self._ended if self._ended is not None else time.perf_counter()
        return self._offset + now - self._started - self._evaluating

    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        path = os.path.join(args.output_dir, CURVE_FILE)
        self.points, self.checkpoints, self._offset = [], {}, 0.0
        if state.global_step > 0 and os.path.isfile(path):  # resumed: go on from the checkpoint's seconds
            with open(path) as file:
                saved = json.load(file)
            self.checkpoints = {s: t for s, t in saved["checkpoints"].items() if int(s) <= state.global_step}
            self.points = [point for point in saved["points"] if point[2] <= state.global_step]
            self._offset = self.checkpoints.get(str(state.global_step), 0.0)
        self._started, self._ended, self._evaluating = time.perf_counter(), None, 0.0

    def on_train_end(self, args, state, control, **kwargs: Any) -> None:
        self._ended = time.perf_counter()

    def on_save(self, args, state, control, **kwargs: Any) -> None:
        self.checkpoints[str(state.global_step)] = round(self.seconds(), 3)
        self._write(args, state)

    def on_evaluate(self, args, state, control, metrics: dict[str, float] | None = None, **kwargs: Any) -> None:
        metric = self.metric or next((name for name in CURVE_METRICS if name in (metrics or {})), None)
        if self._started is None or not metrics or metric not in metrics:
            return
        self.metric = metric
        runtime = next((value for key, value in metrics.items() if key.endswith("_runtime")), 0.0)
        if self._ended is None:  # during training: the evaluation's own time is not training time
            self._evaluating += runtime
        self.points.append([round(self.seconds(), 3), metrics[self.metric], state.global_step])
        self._write(args, state)

    def _write(self, args, state) -> None:
        if not state.is_world_process_zero:
            return
        os.makedirs(args.output_dir, exist_ok=True)
        record = {"metric": self.metric, "points": self.points, "checkpoints": self.checkpoints}
        partial = os.path.join(args.output_dir, f"{CURVE_FILE}.partial")
        with open(partial, "w") as file:
            json.dump(record, file)
        os.replace(partial, os.path.join(args.output_dir, CURVE_FILE))
