"""The parts of a training step, as a profile splits it: the trainer marks the teacher's forward, the sampler's draw,
the student's forward, its classifier and the loss with `torch.profiler.record_function` (a no-op unless a profiler
runs), and `step_profile` reads those marks, with the events PyTorch records itself (the data loader's next batch,
autograd's backward functions, `Optimizer.step`, the profiler's step marks), from a finished profile.

    with torch.profiler.profile(schedule=torch.profiler.schedule(wait=0, warmup=5, active=20)) as profiler:
        ...  # train, calling profiler.step() after each optimizer step
    step_profile(profiler.events(), steps=20)  # {"data": ms, "teacher": ms, ...} per step
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: record_function labels the trainer and the sampled classifier put on their parts of a step.
TEACHER, SAMPLER, STUDENT = "hf_dis.teacher", "hf_dis.sampler", "hf_dis.student"
HEAD, LOSS = "hf_dis.head", "hf_dis.loss"
#: Prefixes of the events PyTorch records itself, and the part each is.
_RECORDED = (
    ("enumerate(DataLoader)", "data"),
    ("autograd::engine::evaluate_function:", "backward"),
    ("Optimizer.step#", "optimizer"),
    ("ProfilerStep", "step"),  # "ProfilerStep*" in a finished profile
)
_MARKED = {TEACHER: "teacher", SAMPLER: "sampler", STUDENT: "student", HEAD: "head", LOSS: "loss"}


def step_profile(events: Iterable[Any], steps: int) -> dict[str, float]:
    """Milliseconds per step of each part, from a profile's `events()` over `steps` profiled steps: `data` (the
    loader's next batch), `teacher` (a live teacher's forward; 0 from a cache), `sampler` (the draw), `backbone` (the
    student's forward less its classifier), `head` (the classifier's forward: over every class, or the sampled
    ones), `loss`, `backward` (every autograd function: the backbone's and the head's), `optimizer` (every
    `Optimizer.step`), `other` (the step's remainder: the Trainer's bookkeeping, logging, callbacks) and `step` (the
    whole step, from the profiler's step marks). An event inside another of its own part (the row-sparse
    classifier's step runs inside the Trainer's optimizer's) counts once, as part of the outer one."""
    events = list(events)
    part_of = {id(event): _part(event.name) for event in events}
    totals: dict[str, float] = {}
    for event in events:
        part, parent = part_of[id(event)], event.cpu_parent
        if part is None:
            continue
        while parent is not None and part_of.get(id(parent)) != part:
            parent = parent.cpu_parent
        if parent is None:  # outermost of its part
            totals[part] = totals.get(part, 0.0) + event.cpu_time_total / 1000 / steps
    parts = {name: totals.get(name, 0.0) for name in ("data", "teacher", "sampler", "head", "loss", "backward")}
    parts["backbone"] = totals.get("student", 0.0) - parts["head"]
    parts["optimizer"] = totals.get("optimizer", 0.0)
    parts["step"] = totals.get("step", 0.0)
    parts["other"] = parts["step"] - sum(value for name, value in parts.items() if name != "step")
    return parts


def _part(name: str) -> str | None:
    return _MARKED.get(name) or next((part for prefix, part in _RECORDED if name.startswith(prefix)), None)
