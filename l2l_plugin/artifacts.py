"""A trained optimizer's files: ``optimizer.json`` (everything but weights) and
``weights.safetensors``. Loading never unpickles anything."""

from __future__ import annotations

import datetime as dt
import math
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

from l2l_plugin.errors import L2LError
from l2l_plugin.optimizer.config import OptimizerNetConfig
from l2l_plugin.optimizer.cost import CostProfile
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
    cost_profile: CostProfile | None = None  # step time and state size, measured where it was made


@dataclass
class TrainedOptimizer:
    manifest: OptimizerManifest
    net: LSTMOptimizerNet


class OptimizerFilesError(L2LError, ValueError):
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


# What a loadable optimizer may be. The files can come from anyone (a registry artifact, a
# downloaded zip), so everything is checked before anything is allocated: a manifest that
# declares a huge network is refused from its numbers, and the weights file's header (read
# without its data) must match the declared network exactly.
MAX_MANIFEST_BYTES = 1 << 20
MAX_GROUPS = 16
MAX_PARAMETERS = 4_000_000  # the paper's network has about 6,000; 20 groups of 128 × 3 fit
FLOAT_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64}


def _read_manifest(path: Path) -> OptimizerManifest:
    from pydantic import ValidationError

    from l2l_plugin.patterns import UnsafePatternError, check_group_pattern

    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise OptimizerFilesError(f"{path} is {path.stat().st_size} bytes, above the {MAX_MANIFEST_BYTES} allowed")
    try:
        manifest = OptimizerManifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise OptimizerFilesError(f"{path} is not a valid optimizer manifest: {exc}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise OptimizerFilesError(f"unsupported optimizer format {manifest.format_version} (expected {FORMAT_VERSION})")
    if len(manifest.network.groups) > MAX_GROUPS:
        raise OptimizerFilesError(f"{path} declares {len(manifest.network.groups)} groups (at most {MAX_GROUPS})")
    for rule in manifest.network.groups:
        try:
            check_group_pattern(rule.pattern)
        except UnsafePatternError as exc:
            raise OptimizerFilesError(f"{path}: {exc}") from None
    return manifest


def _expected_shapes(manifest: OptimizerManifest) -> dict[str, tuple[int, ...]]:
    """The declared network's tensors, built on the meta device (shapes only, no memory)."""
    with torch.device("meta"):
        net = LSTMOptimizerNet(manifest.network)
    shapes = {name: tuple(tensor.shape) for name, tensor in net.state_dict().items()}
    total = sum(math.prod(shape) for shape in shapes.values())
    if total > MAX_PARAMETERS:
        raise OptimizerFilesError(
            f"the manifest declares a network of {total:,} parameters (at most {MAX_PARAMETERS:,})"
        )
    return shapes


def _check_weights(path: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """The weights, after their header matched ``expected`` (names, shapes, float dtypes); finite."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            header = {name: (tuple(handle.get_slice(name).get_shape()), handle.get_slice(name).get_dtype()) for name in handle.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise OptimizerFilesError(f"{path} is truncated or not a safetensors file ({exc})") from None
    if set(header) != set(expected):
        missing, extra = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
        raise OptimizerFilesError(
            f"{path} does not match the architecture in {MANIFEST_NAME}: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    for name, (shape, dtype) in header.items():
        if dtype not in FLOAT_DTYPES:
            raise OptimizerFilesError(f"{path}: tensor {name} has dtype {dtype}; weights must be floating point")
        if shape != expected[name]:
            raise OptimizerFilesError(
                f"{path} does not match the architecture in {MANIFEST_NAME}: {name} has shape {list(shape)}, "
                f"expected {list(expected[name])}"
            )
    try:
        weights = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - a header that lies about the data's length
        raise OptimizerFilesError(f"{path} is truncated or corrupt ({exc})") from None
    for name, tensor in weights.items():
        if not torch.isfinite(tensor).all():
            raise OptimizerFilesError(f"{path}: tensor {name} holds NaN or infinite values")
    return weights


def load_trained_optimizer(directory: Path | str, device: torch.device | str = "cpu") -> TrainedOptimizer:
    """Load and validate an optimizer's files (raises :class:`OptimizerFilesError` on any defect)."""
    directory = Path(directory)
    manifest_path, weights_path = directory / MANIFEST_NAME, directory / WEIGHTS_NAME
    for path in (manifest_path, weights_path):
        if not path.is_file():
            raise OptimizerFilesError(f"{directory} is not a trained optimizer: {path.name} is missing")
    manifest = _read_manifest(manifest_path)
    weights = _check_weights(weights_path, _expected_shapes(manifest))
    net = LSTMOptimizerNet(manifest.network)
    try:
        net.load_state_dict(weights)  # copied into the network's own dtype
    except RuntimeError as exc:
        raise OptimizerFilesError(f"{weights_path} does not match the architecture in {MANIFEST_NAME}: {exc}") from None
    net.requires_grad_(False)
    return TrainedOptimizer(manifest, net.to(device))
