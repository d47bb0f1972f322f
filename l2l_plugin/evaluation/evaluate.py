"""Evaluate a learned optimizer against SGD, NAG, RMSprop and Adam with tuned learning rates.

With several torch.distributed ranks, every run of the held-out and tuning instances is split
over the ranks (each samples and runs its own share of the seeds) and the curves are gathered,
so every rank ends with the same report and the same tuning decisions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from l2l_plugin.evaluation.baselines import OptimizerFactory, baseline_factory, run_baseline
from l2l_plugin.evaluation.report import LEARNED, EvaluationReport, OptimizerResult
from l2l_plugin.families import TaskFamily, TaskStack
from l2l_plugin.optimizer.network import LSTMOptimizerNet
from l2l_plugin.optimizer.rollout import run_learned
from l2l_plugin.training.config import EvaluationConfig
from l2l_plugin.training.distributed import gather_rows, shard
from l2l_plugin.training.seeds import held_out_seeds, validation_seeds


def learning_rate_grid(config: EvaluationConfig) -> list[float]:
    decades = math.log10(config.lr_max / config.lr_min)
    points = max(1, round(decades * config.lr_points_per_decade) + 1)
    return [float(lr) for lr in np.logspace(math.log10(config.lr_min), math.log10(config.lr_max), points)]


def _decade_beyond(grid: list[float], points_per_decade: int, upward: bool) -> list[float]:
    edge = grid[-1] if upward else grid[0]
    factors = [10 ** (k / points_per_decade) for k in range(1, points_per_decade + 1)]
    return [edge * f for f in factors] if upward else [edge / f for f in reversed(factors)]


Curves = tuple[torch.Tensor, torch.Tensor | None]  # (…, tasks, steps + 1) curves, (…, tasks) held-out losses


def run_sharded(
    family: TaskFamily, seeds: Sequence[int], run: Callable[[TaskStack], Curves], task_dim: int
) -> Curves:
    """``run`` on the stack of ``seeds``, each rank on its own share, gathered along ``task_dim``.

    One rank: ``run(family.sample_stack(seeds))``. A rank whose share is empty (fewer seeds
    than ranks) runs nothing and contributes nothing.
    """
    own = shard(seeds)
    return gathered(run(family.sample_stack(own)) if own else None, task_dim)


def gathered(local: Curves | None, task_dim: int) -> Curves:
    """Every rank's ``local`` results (``None``: an empty share) in seed order, on every rank.
    ``task_dim`` is the tasks' dimension of the curves and of the held-out losses alike."""
    curves = gather_rows(None if local is None else local[0], task_dim)
    assert curves is not None, "no tasks ran on any rank"
    return curves, gather_rows(None if local is None else local[1], task_dim)


@dataclass(frozen=True)
class TunedRate:
    lr: float
    grid: list[float]  # every rate tried, ascending
    at_grid_edge: bool  # still on an edge after the allowed extensions
    score: float = math.inf  # mean final loss of ``lr`` on the tuning tasks


def tune_learning_rate(
    name: str, family: TaskFamily, config: EvaluationConfig, steps: int, device: torch.device
) -> TunedRate:
    """The rate with the lowest mean final loss on the validation instances.

    A best rate on an edge of the grid means the optimum may lie beyond it: the grid grows by a
    decade on that side (up to ``grid_extensions`` times), so a baseline is never handicapped
    by a grid that was too narrow for the family.
    """
    return tune_rate(baseline_factory(name, config.nag_momentum), family, config, steps, device)


def tune_rate(
    factory: OptimizerFactory, family: TaskFamily, config: EvaluationConfig, steps: int, device: torch.device
) -> TunedRate:
    """:func:`tune_learning_rate` for any optimizer built by ``factory`` from param groups."""
    seeds = validation_seeds(config.tuning_tasks)
    scores: dict[float, float] = {}

    def score(rates: list[float]) -> None:
        curves, _ = run_sharded(family, seeds, lambda stack: run_baseline(factory, stack, rates, steps, device), 1)
        final = torch.nan_to_num(curves[:, :, -1].double(), nan=math.inf)
        scores.update(zip(rates, (float(v) for v in final.mean(dim=1))))

    score(learning_rate_grid(config))
    extensions = 0
    while True:
        grid = sorted(scores)
        best = min(grid, key=lambda lr: (scores[lr], lr))
        at_edge = len(grid) > 1 and best in (grid[0], grid[-1]) and math.isfinite(scores[best])
        if not at_edge or extensions == config.grid_extensions:
            return TunedRate(best, grid, at_edge, scores[best])
        score(_decade_beyond(grid, config.lr_points_per_decade, upward=best == grid[-1]))
        extensions += 1


def evaluate(
    net: LSTMOptimizerNet,
    family: TaskFamily,
    family_name: str,
    config: EvaluationConfig,
    steps: int,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
) -> EvaluationReport:
    """Every optimizer on the same held-out instances; baselines tuned on validation instances.

    ``on_progress(done, total)`` is called after each optimizer (the learned one, then every
    baseline: tuning and held-out run).
    """
    device = torch.device(device)
    total = 1 + len(config.baselines)
    net = net.to(device)
    seeds = held_out_seeds(config.test_tasks)
    results: dict[str, OptimizerResult] = {}

    # Each rank samples its share of the held-out instances once; every optimizer runs on it.
    own = shard(seeds)
    held_out = family.sample_stack(own) if own else None

    def on_held_out(run: Callable[[TaskStack], Curves], task_dim: int) -> Curves:
        return gathered(run(held_out) if held_out is not None else None, task_dim)

    curves, eval_losses = on_held_out(lambda stack: run_learned(net, stack, steps, device), 0)
    results[LEARNED] = OptimizerResult.from_curves(curves, eval_losses)
    if on_progress is not None:
        on_progress(1, total)

    for name in config.baselines:
        tuned = tune_learning_rate(name, family, config, steps, device)
        factory = baseline_factory(name, config.nag_momentum)
        curves, eval_losses = on_held_out(
            lambda stack, factory=factory, lr=tuned.lr: run_baseline(factory, stack, [lr], steps, device), 1
        )
        results[name] = OptimizerResult.from_curves(
            curves[0],
            None if eval_losses is None else eval_losses[0],
            lr=tuned.lr,
            lr_grid=tuned.grid,
            lr_at_grid_edge=tuned.at_grid_edge,
        )
        if on_progress is not None:
            on_progress(len(results), total)

    return EvaluationReport.build(
        family=family_name,
        family_config=family.model_dump(mode="json"),
        steps=steps,
        test_seeds=seeds,
        tuning_seeds=validation_seeds(config.tuning_tasks),
        optimizers=results,
    )
