"""One meta-iteration: a truncation of the optimizee's trajectory and the meta-step it gives.

Truncated backpropagation through time (paper, section 2): the learned optimizer takes
``length`` steps on a batch of tasks, the weighted losses along the way are the meta-loss, and
its gradient with respect to the optimizer's weights (averaged over the ranks) is one Adam step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from l2l_plugin.families import seeded_generator
from l2l_plugin.optimizer.network import LSTMOptimizerNet
from l2l_plugin.optimizer.rollout import OptimizeeBatch
from l2l_plugin.training.config import MetaTrainConfig
from l2l_plugin.training.distributed import Ranks, average_meta_gradient


def step_objective(losses: torch.Tensor, log_weight: float) -> torch.Tensor:
    """Per-step meta-loss: mean f (+ log_weight * mean log f, which is scale invariant)."""
    objective = losses.mean()
    if log_weight:
        objective = objective + log_weight * torch.log(losses.clamp_min(1e-30)).mean()
    return objective


def unroll_lengths(config: MetaTrainConfig, horizon: int, trajectory: int) -> list[int]:
    """The truncations of one trajectory: unroll_length each, the first one random if asked."""
    unroll = config.unroll_length or horizon
    first = unroll
    if config.random_unroll_offset:
        first = 1 + int(torch.randint(unroll, (), generator=seeded_generator(config.seed, trajectory, 0x0FF5)))
    first = min(first, horizon)
    lengths = [first]
    while (covered := sum(lengths)) < horizon:
        lengths.append(min(unroll, horizon - covered))
    return lengths


def truncation_meta_loss(
    batch: OptimizeeBatch, first_step: int, length: int, weights: Sequence[float], log_weight: float
) -> torch.Tensor | None:
    """Take ``length`` optimizee steps from ``first_step``; their weighted mean meta-loss.

    None when every step of the truncation has weight 0 (``final_loss_steps`` weights only the
    end): the steps are taken without a graph, there is nothing to learn from them.
    """
    if not any(weights[first_step : first_step + length]):
        for step in range(first_step, first_step + length):
            batch.step(batch.losses(step), track_meta_gradient=False)
        return None
    losses = batch.losses(first_step)
    meta_loss = torch.zeros((), device=losses.device)
    for step in range(first_step, first_step + length):
        batch.step(losses, track_meta_gradient=True)
        losses = batch.losses(step + 1)
        meta_loss = meta_loss + weights[step] * step_objective(losses, log_weight)
    return meta_loss / length


@dataclass(frozen=True)
class MetaStep:
    """What a meta-step did: ``finite`` False means skipped (a non-finite loss or gradient on
    some rank); ``meta_loss`` is the ranks' mean meta-loss when finite, else None."""

    finite: bool
    meta_loss: float | None


def _gradient_is_finite(net: LSTMOptimizerNet) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in net.parameters())


def meta_gradient_step(
    net: LSTMOptimizerNet,
    meta_optimizer: torch.optim.Optimizer,
    meta_loss: torch.Tensor,
    config: MetaTrainConfig,
    ranks: Ranks,
    run_fraction: Callable[[], float],
) -> MetaStep:
    """Backpropagate this rank's meta-loss, average the meta-gradient over the ranks, and step
    the meta-optimizer unless any rank's meta-loss or meta-gradient was non-finite (then every
    rank skips it). ``run_fraction`` (a collective under a time budget) sets the cosine rate."""
    meta_optimizer.zero_grad(set_to_none=True)
    finite = bool(torch.isfinite(meta_loss))
    if finite:
        meta_loss.backward()
        finite = _gradient_is_finite(net)
    value = float(meta_loss.detach()) if finite else None
    finite, value = average_meta_gradient(list(net.parameters()), finite, value, ranks)
    if not finite:
        meta_optimizer.zero_grad(set_to_none=True)
        return MetaStep(False, None)
    if config.meta_lr_schedule == "cosine":
        for group in meta_optimizer.param_groups:
            group["lr"] = config.meta_lr * 0.5 * (1 + math.cos(math.pi * run_fraction()))
    if config.grad_clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip_norm)
    meta_optimizer.step()
    return MetaStep(True, value)
