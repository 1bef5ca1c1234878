"""Where and with what a benchmark ran: recorded at the top of every results file."""

from __future__ import annotations

import datetime
import platform

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
