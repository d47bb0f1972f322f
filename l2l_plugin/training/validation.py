"""Scoring the learned optimizer on the validation tasks (which weights a run keeps)."""

from __future__ import annotations

import torch

from l2l_plugin.families import TaskFamily
from l2l_plugin.loss_stats import geometric_mean
from l2l_plugin.optimizer.network import LSTMOptimizerNet
from l2l_plugin.optimizer.rollout import run_learned
from l2l_plugin.training.config import MetaTrainConfig
from l2l_plugin.training.distributed import Ranks, gather_rows, shard
from l2l_plugin.training.seeds import validation_seeds
from l2l_plugin.training.unroll import step_objective


def validation_score(curve: torch.Tensor, config: MetaTrainConfig) -> float:
    """Score (lower is better) of (B, T + 1) validation loss curves, by ``validation_metric``."""
    final = curve[:, -1].double()
    if config.validation_metric == "final_loss_mean":
        return float(final.mean())
    if config.validation_metric == "final_loss_geomean":
        return geometric_mean(final)
    if config.validation_metric == "tail_loss_mean":
        return float(curve[:, -(config.final_loss_steps or 10) :].double().mean())
    steps = range(1, curve.shape[1])
    return float(torch.stack([step_objective(curve[:, t], config.meta_loss_log_weight) for t in steps]).mean())


class Validation:
    """The run's validation tasks, sampled once; each rank runs its own share of them and the
    gathered curves give every rank the same score (so every rank keeps the same best weights)."""

    def __init__(self, family: TaskFamily, config: MetaTrainConfig, device: torch.device, ranks: Ranks) -> None:
        self.config = config
        self.device = device
        self.ranks = ranks
        own_seeds = shard(validation_seeds(config.validation_tasks), ranks)
        self.tasks = family.sample_stack(own_seeds) if own_seeds else None

    def score(self, net: LSTMOptimizerNet) -> float:
        """The validation score of ``net`` as it is now (a collective: every rank calls it)."""
        local = None
        if self.tasks is not None:
            local, _ = run_learned(net, self.tasks, self.config.validation_steps, self.device)
        curve = gather_rows(local, 0, self.ranks)
        assert curve is not None  # validation_tasks >= 1
        return validation_score(curve, self.config)
