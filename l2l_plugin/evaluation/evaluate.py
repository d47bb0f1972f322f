"""Evaluate a learned optimizer against SGD, NAG, RMSprop and Adam with tuned learning rates."""

from __future__ import annotations

import math

import numpy as np
import torch

from l2l_plugin.evaluation.baselines import baseline_factory, run_baseline
from l2l_plugin.evaluation.report import LEARNED, EvaluationReport, OptimizerResult
from l2l_plugin.families import TaskFamily
from l2l_plugin.optimizer.network import LSTMOptimizerNet
from l2l_plugin.optimizer.rollout import run_learned
from l2l_plugin.training.config import EvaluationConfig
from l2l_plugin.training.seeds import held_out_seeds, validation_seeds


def learning_rate_grid(config: EvaluationConfig) -> list[float]:
    decades = math.log10(config.lr_max / config.lr_min)
    points = max(1, round(decades * config.lr_points_per_decade) + 1)
    return [float(lr) for lr in np.logspace(math.log10(config.lr_min), math.log10(config.lr_max), points)]


def tune_learning_rate(
    name: str, family: TaskFamily, config: EvaluationConfig, steps: int, device: torch.device
) -> tuple[float, list[float]]:
    """The grid's learning rate with the lowest mean final loss on the validation instances."""
    grid = learning_rate_grid(config)
    seeds = validation_seeds(config.tuning_tasks)
    curves, _ = run_baseline(baseline_factory(name, config.nag_momentum), family.sample_stack(seeds), grid, steps, device)
    final = torch.nan_to_num(curves[:, :, -1].double(), nan=math.inf)
    scores = final.mean(dim=1)
    return grid[int(torch.argmin(scores))], grid


def evaluate(
    net: LSTMOptimizerNet,
    family: TaskFamily,
    family_name: str,
    config: EvaluationConfig,
    steps: int,
    device: torch.device | str = "cpu",
) -> EvaluationReport:
    """Every optimizer on the same held-out instances; baselines tuned on validation instances."""
    device = torch.device(device)
    net = net.to(device)
    seeds = held_out_seeds(config.test_tasks)
    results: dict[str, OptimizerResult] = {}

    held_out = family.sample_stack(seeds)  # one sample, shared by every optimizer
    curves, eval_losses = run_learned(net, held_out, steps, device)
    results[LEARNED] = OptimizerResult.from_curves(curves, eval_losses)

    for name in config.baselines:
        lr, grid = tune_learning_rate(name, family, config, steps, device)
        curves, eval_losses = run_baseline(
            baseline_factory(name, config.nag_momentum), held_out, [lr], steps, device
        )
        results[name] = OptimizerResult.from_curves(
            curves[0],
            None if eval_losses is None else eval_losses[0],
            lr=lr,
            lr_grid=grid,
            lr_at_grid_edge=lr in (grid[0], grid[-1]),
        )

    return EvaluationReport.build(
        family=family_name,
        family_config=family.model_dump(mode="json"),
        steps=steps,
        test_seeds=seeds,
        tuning_seeds=validation_seeds(config.tuning_tasks),
        optimizers=results,
    )
