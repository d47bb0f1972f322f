"""Checkpoints that load with ``torch.load(weights_only=True)`` and resume a run exactly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(directory: Path, payload: dict[str, Any]) -> Path:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / CHECKPOINT_NAME
    partial = directory / (CHECKPOINT_NAME + ".partial")
    torch.save(payload, partial)
    os.replace(partial, final)
    return final


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    path = directory / CHECKPOINT_NAME
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)
