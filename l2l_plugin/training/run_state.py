"""The mutable state of one meta-training run: everything a checkpoint must restore."""

from __future__ import annotations

from typing import Any

import torch

from l2l_plugin.families import TaskFamily, TaskStack
from l2l_plugin.optimizer.network import LSTMOptimizerNet
from l2l_plugin.training.best_weights import BestWeights
from l2l_plugin.training.config import MetaTrainConfig
from l2l_plugin.training.distributed import Ranks
from l2l_plugin.training.distribution import scaled_stack
from l2l_plugin.training.seeds import training_seed


class RunState:
    """The net, its meta-optimizer, the counters, the best weights and the history.

    Creating one seeds torch's global CPU generator with ``config.seed`` (the net's initial
    weights come from it; they are drawn on the CPU, whatever the device): ``meta_train`` does so
    inside ``torch.random.fork_rng``, so its caller's RNG is left as it was. CUDA's generators
    are not touched (nothing in a run draws from them).
    """

    def __init__(self, family: TaskFamily, config: MetaTrainConfig, device: torch.device, ranks: Ranks) -> None:
        self.family = family
        self.config = config
        self.device = device
        self.ranks = ranks
        torch.random.default_generator.manual_seed(config.seed)
        self.net = LSTMOptimizerNet(config.network).to(device)
        self.meta_optimizer = torch.optim.Adam(self.net.parameters(), lr=config.meta_lr)
        self.iteration = 0
        self.trajectory = 0
        self.skipped = 0
        self.consecutive_nonfinite = 0
        self.best = BestWeights(self.net)
        self.last_validation: float | None = None
        self.history: list[dict[str, float]] = []
        self.elapsed_before = 0.0

    def identity(self) -> str:
        identity = self.config.model_dump_json(exclude={"max_seconds", "checkpoint_every"}) + self.family.model_dump_json()
        # The ranks split each meta-batch's seeds: another world size is another run. (One
        # rank adds nothing, so single-process checkpoints keep their identity.)
        return identity + (f"|ranks={self.ranks.world_size}" if self.ranks.distributed else "")

    def state(self, elapsed: float) -> dict[str, Any]:
        return {
            "identity": self.identity(),
            "net": self.net.state_dict(),
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "counters": [self.iteration, self.trajectory, self.skipped, self.consecutive_nonfinite, self.best.iteration],
            "best_validation": self.best.score,
            "last_validation": self.last_validation,
            "best_weights": self.best.weights,
            "history": self.history,
            "elapsed": elapsed,
        }

    def restore(self, saved: dict[str, Any]) -> None:
        """Back to ``saved`` (from :meth:`state`; the caller has checked its identity)."""
        self.net.load_state_dict(saved["net"])
        self.meta_optimizer.load_state_dict(saved["meta_optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        (self.iteration, self.trajectory, self.skipped, self.consecutive_nonfinite, best_iteration) = saved["counters"]
        self.best.restore(saved["best_validation"], best_iteration, saved["best_weights"], self.device)
        self.last_validation = saved["last_validation"]
        self.history = saved["history"]
        self.elapsed_before = saved["elapsed"]

    def training_stack(self, trajectory_family: TaskFamily) -> TaskStack:
        """This rank's share of the trajectory's meta-batch: ``meta_batch_size`` tasks per rank,
        rank r taking the r-th block of the meta-batch's seeds (one rank: all of them)."""
        share = self.config.meta_batch_size
        first = (self.trajectory * self.ranks.world_size + self.ranks.rank) * share
        seeds = [training_seed(self.config.seed, first + b) for b in range(share)]
        stack = trajectory_family.sample_stack(seeds)
        # Scales are drawn per stack: each rank draws its own (one rank: the trajectory's, as ever).
        draw = self.trajectory * self.ranks.world_size + self.ranks.rank
        return scaled_stack(stack, self.config.random_scaling, self.config.seed, draw)
