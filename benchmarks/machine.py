"""What machine and software a benchmark figure was measured on."""

from __future__ import annotations

import datetime as dt
import os
import platform

import torch

from l2l_plugin.optimizer.cost import cpu_name


def machine_info() -> dict[str, object]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
