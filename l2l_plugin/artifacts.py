"""A trained optimizer's files: ``optimizer.json`` (everything but weights) and
``weights.safetensors``. Loading never unpickles anything."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from l2l_plugin.optimizer.config import OptimizerNetConfig
from l2l_plugin.optimizer.network import LSTMOptimizerNet

MANIFEST_NAME = "optimizer.json"
WEIGHTS_NAME = "weights.safetensors"
FORMAT_VERSION = 1


class Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")

    library_version: str
    torch_version: str = torch.__version__
    git_commit: str | None = None
    created_at: str = Field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    device: str | None = None
    meta_train_seconds: float | None = None
    meta_iterations: int | None = None
    best_iteration: int | None = None
    best_validation_loss: float | None = None
    skipped_nonfinite: int | None = None


class OptimizerManifest(BaseModel):
    """What a trained optimizer is: architecture, what it was trained on and how, and how it did."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    format_version: int = FORMAT_VERSION
    network: OptimizerNetConfig
    family: str
    family_config: dict[str, Any]
    meta_training: dict[str, Any]
    provenance: Provenance
    evaluation_summary: dict[str, float | str | bool] | None = None


@dataclass
class TrainedOptimizer:
    manifest: OptimizerManifest
    net: LSTMOptimizerNet


class OptimizerFilesError(ValueError):
    """A directory that is not (or no longer) a valid trained optimizer."""


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the checkout this library runs from, when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path or Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def save_trained_optimizer(directory: Path | str, trained: TrainedOptimizer) -> Path:
    """Write both files into ``directory`` atomically (a crash leaves no half-written optimizer)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory.parent))
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in trained.net.state_dict().items()}
        save_file(weights, str(staging / WEIGHTS_NAME), metadata={"format_version": str(FORMAT_VERSION)})
        (staging / MANIFEST_NAME).write_text(trained.manifest.model_dump_json(indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def load_trained_optimizer(directory: Path | str, device: torch.device | str = "cpu") -> TrainedOptimizer:
    directory = Path(directory)
    manifest_path, weights_path = directory / MANIFEST_NAME, directory / WEIGHTS_NAME
    for path in (manifest_path, weights_path):
        if not path.is_file():
            raise OptimizerFilesError(f"{directory} is not a trained optimizer: {path.name} is missing")
    manifest = OptimizerManifest.model_validate_json(manifest_path.read_text())
    if manifest.format_version != FORMAT_VERSION:
        raise OptimizerFilesError(f"unsupported optimizer format {manifest.format_version} (expected {FORMAT_VERSION})")
    net = LSTMOptimizerNet(manifest.network)
    try:
        net.load_state_dict(load_file(str(weights_path)))
    except RuntimeError as exc:
        raise OptimizerFilesError(f"{weights_path} does not match the architecture in {MANIFEST_NAME}: {exc}") from None
    net.requires_grad_(False)
    return TrainedOptimizer(manifest, net.to(device))
