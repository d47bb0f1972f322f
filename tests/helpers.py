"""Small families and configs shared by the tests (defined here, not registered as plugins)."""

from __future__ import annotations

import json
import math

import torch
from pydantic import Field

from l2l_plugin.families import Task, TaskFamily, seeded_generator
from l2l_plugin.training import MetaTrainConfig

TINY_META = {
    "meta_batch_size": 8,
    "horizon": 10,
    "unroll_length": 5,
    "meta_iterations": 6,
    "validation_every": 3,
    "validation_tasks": 4,
    "checkpoint_every": 2,
    "evaluation": {
        "test_tasks": 6,
        "tuning_tasks": 3,
        "lr_min": 1e-3,
        "lr_max": 1.0,
        "lr_points_per_decade": 1,
        "cost_profile_parameters": 1000,
    },
}


def meta_args(config: dict, prefix: str = "") -> list[str]:
    """A (nested) meta-training config as ``l2l meta-train`` arguments: ``--meta a.b=<json>``."""
    args: list[str] = []
    for key, value in config.items():
        if isinstance(value, dict):
            args += meta_args(value, f"{prefix}{key}.")
        else:
            args += ["--meta", f"{prefix}{key}={json.dumps(value)}"]
    return args


def tiny_config(**overrides) -> MetaTrainConfig:
    merged = {**TINY_META, **overrides}
    return MetaTrainConfig.model_validate(merged)


class TwoKindTask(Task):
    """A 'conv' and an 'fc' parameter, so per-group LSTMs have something to split."""

    def __init__(self, seed: int, nan_at_step: int | None) -> None:
        generator = seeded_generator(seed)
        self.a = torch.randn(4, generator=generator)
        self.b = torch.randn(3, generator=generator)
        self.nan_at_step = nan_at_step

    def init_params(self, device="cpu"):
        return {"conv.weight": torch.zeros(2, 2, device=device), "fc.weight": torch.zeros(3, device=device)}

    def loss(self, params, step=0):
        value = (params["conv.weight"].reshape(-1) - self.a).square().sum() + (params["fc.weight"] - self.b).square().sum()
        if self.nan_at_step is not None and step == self.nan_at_step:
            value = value * math.nan
        return value


class TwoKindFamily(TaskFamily):
    """Two parameter kinds; optionally a NaN loss on some tasks (failure injection)."""

    nan_every: int = Field(0, ge=0, description="Every nan_every-th training task gives a NaN loss (0: never).")

    def sample(self, seed: int) -> Task:
        poisoned = self.nan_every and (seed // 3) % self.nan_every == 0 and seed % 3 == 0
        return TwoKindTask(seed, nan_at_step=3 if poisoned else None)


def untrained_optimizer(network: dict, head_std: float = 0.5):
    """A TrainedOptimizer of a fresh net whose head makes visible steps (no meta-training)."""
    from l2l_plugin.artifacts import OptimizerManifest, Provenance, TrainedOptimizer
    from l2l_plugin.optimizer import LSTMOptimizerNet, OptimizerNetConfig

    torch.manual_seed(0)
    config = OptimizerNetConfig.model_validate(network)
    net = LSTMOptimizerNet(config)
    with torch.no_grad():
        for sub in net.nets.values():
            sub.head.weight.normal_(std=head_std)
    manifest = OptimizerManifest(
        network=config, family="none", family_config={}, meta_training={}, provenance=Provenance(library_version="t")
    )
    return TrainedOptimizer(manifest, net)


# A process that takes the champion lock of l2l-quadratic, prints when it has it, holds it argv[2] s.
CHAMPION_LOCK_HOLDER = (
    "import sys, time; from l2l_api.db import JobStore\n"
    "store = JobStore(sys.argv[1]); print('waiting', flush=True)\n"
    "with store.champion_lock('l2l-quadratic'):\n"
    "    print(time.time(), flush=True)\n"
    "    time.sleep(float(sys.argv[2]))\n"
)


def assert_champion_lock_excludes_another_process(store, url: str) -> None:
    """While this process holds the lock, another process waits for it and gets it only after."""
    import subprocess
    import sys
    import time

    with store.champion_lock("l2l-quadratic"):
        other = subprocess.Popen(
            [sys.executable, "-c", CHAMPION_LOCK_HOLDER, url, "0"], stdout=subprocess.PIPE, text=True
        )
        assert other.stdout is not None and other.stdout.readline().strip() == "waiting"
        time.sleep(2)
        assert other.poll() is None  # still waiting for the lock
        released = time.time()
    out, _ = other.communicate(timeout=60)
    assert float(out) >= released
