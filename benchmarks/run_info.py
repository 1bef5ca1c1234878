"""Where and with what a benchmark ran, recorded at the top of every results file; the writing of those files; and
the median time of a call, which several benchmarks take."""

from __future__ import annotations

import datetime
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import transformers

import hf_dis


def run_info(device: torch.device | str = "cpu") -> dict[str, str]:
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {
        "date": datetime.date.today().isoformat(),
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "hf_dis": hf_dis.__version__,
        "python": platform.python_version(),
    }


def write_results(out: Path, name: str, meta: dict, rows: list[dict], markdown: str) -> None:
    """`out/NAME.jsonl` (a `{"meta": meta}` line, then one line per row) and `out/NAME.md` (`markdown`)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / f"{name}.jsonl", "w") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        f.writelines(json.dumps(row) + "\n" for row in rows)
    (out / f"{name}.md").write_text(markdown)


def median_ms(function: Callable[[], object], repeats: int) -> float:
    """The median of `repeats` timed calls of `function`, in milliseconds, after one untimed warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)
