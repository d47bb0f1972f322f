"""Meta-training: truncated backpropagation through the optimizee's training (paper, section 2).

Runs on one process or on several torch.distributed ranks (``training/distributed``): each rank
takes its own share of every meta-batch, the meta-gradients are averaged with one all-reduce,
and every decision that depends on a clock or a callback is rank 0's (``agree``), so the ranks
hold the same weights and take the same steps. Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from l2l_plugin.families import TaskFamily, seeded_generator
from l2l_plugin.optimizer.network import LSTMOptimizerNet
from l2l_plugin.optimizer.rollout import OptimizeeBatch, run_learned
from l2l_plugin.training.callbacks import MetaTrainCallback, MetaTrainProgress
from l2l_plugin.training.checkpoint import load_checkpoint, save_checkpoint
from l2l_plugin.training.config import MetaTrainConfig
from l2l_plugin.training.distributed import (
    Ranks,
    agree,
    average_meta_gradient,
    broadcast_object,
    current_ranks,
    gather_rows,
    shard,
)
from l2l_plugin.training.distribution import check_distribution, sample_family, scaled_stack
from l2l_plugin.training.threads import cpu_threads, task_coordinates
from l2l_plugin.training.warm_start import choose_nominal, warm_start
from l2l_plugin.training.seeds import training_seed, validation_seeds


class MetaTrainingDiverged(RuntimeError):
    """Too many non-finite meta-losses or meta-gradients in a row."""


class MetaTrainingCancelled(RuntimeError):
    """A callback asked the run to stop."""


class CheckpointMismatch(ValueError):
    """The checkpoint directory holds a run with another configuration (or number of ranks)."""


@dataclass
class MetaTrainResult:
    net: LSTMOptimizerNet  # holds the best weights on validation
    best_validation_loss: float
    best_iteration: int
    iterations: int
    skipped_nonfinite: int
    wall_seconds: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = "completed"  # or "time budget" (max_seconds ended it early)
    config: MetaTrainConfig | None = None  # as trained (warm_start 'tuned_nominal' picks network.nominal)


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return device


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


def validation_score(curve: torch.Tensor, config: MetaTrainConfig) -> float:
    """Score (lower is better) of (B, T + 1) validation loss curves, by ``validation_metric``."""
    final = curve[:, -1].double()
    if config.validation_metric == "final_loss_mean":
        return float(final.mean())
    if config.validation_metric == "final_loss_geomean":
        return float(torch.exp(torch.log(final.clamp_min(1e-300)).mean()))
    if config.validation_metric == "tail_loss_mean":
        return float(curve[:, -(config.final_loss_steps or 10) :].double().mean())
    steps = range(1, curve.shape[1])
    return float(torch.stack([step_objective(curve[:, t], config.meta_loss_log_weight) for t in steps]).mean())


class _Run:
    """Mutable state of one meta-training run; everything a checkpoint must restore."""

    def __init__(self, family: TaskFamily, config: MetaTrainConfig, device: torch.device, ranks: Ranks) -> None:
        self.family = family
        self.config = config
        self.device = device
        self.ranks = ranks
        torch.manual_seed(config.seed)
        self.net = LSTMOptimizerNet(config.network).to(device)
        self.meta_optimizer = torch.optim.Adam(self.net.parameters(), lr=config.meta_lr)
        self.iteration = 0
        self.trajectory = 0
        self.skipped = 0
        self.consecutive_nonfinite = 0
        self.best_validation = math.inf
        self.best_iteration = 0
        self.best_weights = copy.deepcopy(self.net.state_dict())
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
            "counters": [self.iteration, self.trajectory, self.skipped, self.consecutive_nonfinite, self.best_iteration],
            "best_validation": self.best_validation,
            "last_validation": self.last_validation,
            "best_weights": self.best_weights,
            "history": self.history,
            "elapsed": elapsed,
        }

    def training_stack(self, trajectory_family: TaskFamily) -> Any:
        """This rank's share of the trajectory's meta-batch: ``meta_batch_size`` tasks per rank,
        rank r taking the r-th block of the meta-batch's seeds (one rank: all of them)."""
        share = self.config.meta_batch_size
        first = (self.trajectory * self.ranks.world_size + self.ranks.rank) * share
        seeds = [training_seed(self.config.seed, first + b) for b in range(share)]
        stack = trajectory_family.sample_stack(seeds)
        # Scales are drawn per stack: each rank draws its own (one rank: the trajectory's, as ever).
        draw = self.trajectory * self.ranks.world_size + self.ranks.rank
        return scaled_stack(stack, self.config.random_scaling, self.config.seed, draw)

    def restore(self, saved: dict[str, Any]) -> None:
        if saved["identity"] != self.identity():
            raise CheckpointMismatch(
                "the checkpoint was written by a run with a different configuration or number of ranks"
            )
        self.net.load_state_dict(saved["net"])
        self.meta_optimizer.load_state_dict(saved["meta_optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        (self.iteration, self.trajectory, self.skipped, self.consecutive_nonfinite, self.best_iteration) = saved[
            "counters"
        ]
        self.best_validation = saved["best_validation"]
        self.last_validation = saved["last_validation"]
        self.best_weights = {k: v.to(self.device) for k, v in saved["best_weights"].items()}
        self.history = saved["history"]
        self.elapsed_before = saved["elapsed"]


def _meta_gradient_is_finite(net: LSTMOptimizerNet) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in net.parameters())


def meta_train(
    family: TaskFamily,
    config: MetaTrainConfig,
    *,
    checkpoint_dir: Path | str | None = None,
    callbacks: Sequence[MetaTrainCallback] = (),
) -> MetaTrainResult:
    """Meta-train an LSTM optimizer on ``family``; resumes from ``checkpoint_dir`` when it has one."""
    with cpu_threads(config.cpu_threads, coordinates=config.meta_batch_size * task_coordinates(family)):
        return _meta_train(family, config, checkpoint_dir, callbacks)


def _meta_train(
    family: TaskFamily,
    config: MetaTrainConfig,
    checkpoint_dir: Path | str | None,
    callbacks: Sequence[MetaTrainCallback],
) -> MetaTrainResult:
    device = resolve_device(config.device)
    ranks = current_ranks()
    check_distribution(family, config.family_distribution)  # before minutes of warm-start tuning
    # Tuning shards its tasks over the ranks and gathers the scores: every rank picks the same.
    config, tuned_nominal = choose_nominal(family, config, device)
    run = _Run(family, config, device, ranks)
    checkpoint_path = Path(checkpoint_dir) if checkpoint_dir is not None else None
    # Rank 0 reads the checkpoint and hands it to the others: they need no shared disk.
    saved = load_checkpoint(checkpoint_path) if checkpoint_path is not None and ranks.main else None
    if (saved := broadcast_object(saved, ranks)) is not None:
        run.restore(saved)
    elif (tuned := warm_start(run.net, family, config, device, tuned_nominal)) is not None:
        run.best_weights = copy.deepcopy(run.net.state_dict())
        run.history.append({"iteration": 0, "warm_start_lr": tuned})

    # Each rank runs its share of the validation tasks; the gathered curves give every rank
    # the same score, so every rank keeps the same best weights and history.
    own_validation_seeds = shard(validation_seeds(config.validation_tasks), ranks)
    validation_tasks = family.sample_stack(own_validation_seeds) if own_validation_seeds else None
    started = time.perf_counter()
    last_checkpoint = run.iteration

    def elapsed() -> float:
        return run.elapsed_before + time.perf_counter() - started

    def progress(meta_loss: float | None) -> MetaTrainProgress:
        best = run.best_validation if math.isfinite(run.best_validation) else None
        return MetaTrainProgress(
            run.iteration, config.meta_iterations, meta_loss, run.last_validation, best, run.skipped, elapsed()
        )

    def run_fraction() -> float:
        fraction = run.iteration / config.meta_iterations
        if config.max_seconds is not None:
            # Rank 0's clock: every rank must pick the same horizon and learning rate.
            fraction = agree([max(fraction, elapsed() / config.max_seconds)], ranks)[0]
        return min(fraction, 1.0)

    def validate() -> None:
        local = None
        if validation_tasks is not None:
            local, _ = run_learned(run.net, validation_tasks, config.validation_steps, device)
        curve = gather_rows(local, 0, ranks)
        assert curve is not None  # validation_tasks >= 1
        run.last_validation = validation_score(curve, config)
        run.history.append({"iteration": run.iteration, "validation_loss": run.last_validation})
        if math.isfinite(run.last_validation) and run.last_validation < run.best_validation:
            run.best_validation = run.last_validation
            run.best_iteration = run.iteration
            run.best_weights = copy.deepcopy(run.net.state_dict())
        for callback in callbacks:
            callback.on_validation(progress(None))

    def stop_requested() -> tuple[bool, bool]:
        """(cancelled, time budget spent), as rank 0's callbacks and clock say."""
        cancelled = ranks.main and any(callback.should_stop() for callback in callbacks)
        budget = config.max_seconds is not None and elapsed() >= config.max_seconds
        cancelled_everywhere, budget_everywhere = agree([float(cancelled), float(budget)], ranks)
        return bool(cancelled_everywhere), bool(budget_everywhere)

    if run.iteration == 0 and not any("validation_loss" in h for h in run.history):
        validate()  # the untrained optimizer is the first candidate, so "best" is never unmeasured

    stop_reason: str | None = None
    while run.iteration < config.meta_iterations and stop_reason is None:
        horizon = config.horizon_at(run_fraction())
        weights = config.step_weights_for(horizon)
        trajectory_family = sample_family(family, config.family_distribution, config.seed, run.trajectory)
        batch = OptimizeeBatch(run.net, run.training_stack(trajectory_family), device)
        step = 0
        for unroll_length in unroll_lengths(config, horizon, run.trajectory):
            if run.iteration >= config.meta_iterations:
                break
            losses = batch.losses(step)
            if not any(weights[step : step + unroll_length]):
                # Nothing to learn from (final_loss_steps weights only the end): just move on.
                for _ in range(unroll_length):
                    batch.step(losses, track_meta_gradient=False)
                    step += 1
                    losses = batch.losses(step)
                continue
            meta_loss = torch.zeros((), device=device)
            for _ in range(unroll_length):
                batch.step(losses, track_meta_gradient=True)
                step += 1
                losses = batch.losses(step)
                meta_loss = meta_loss + weights[step - 1] * step_objective(losses, config.meta_loss_log_weight)
            meta_loss = meta_loss / unroll_length

            finite, meta_loss_value = _meta_gradient(run, meta_loss)
            if finite:
                if config.meta_lr_schedule == "cosine":
                    for group in run.meta_optimizer.param_groups:
                        group["lr"] = config.meta_lr * 0.5 * (1 + math.cos(math.pi * run_fraction()))
                if config.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(run.net.parameters(), config.grad_clip_norm)
                run.meta_optimizer.step()
                run.consecutive_nonfinite = 0
            else:
                run.meta_optimizer.zero_grad(set_to_none=True)
                run.skipped += 1
                run.consecutive_nonfinite += 1
            run.iteration += 1
            run.history.append(
                {"iteration": run.iteration, "meta_loss": math.nan if meta_loss_value is None else meta_loss_value}
            )
            for callback in callbacks:
                callback.on_iteration(progress(meta_loss_value))
            if run.consecutive_nonfinite >= config.max_consecutive_nonfinite:
                raise MetaTrainingDiverged(
                    f"{run.consecutive_nonfinite} non-finite meta-losses or meta-gradients in a row "
                    f"(iteration {run.iteration}, {run.skipped} skipped in all); lower meta_lr or output_scale, "
                    "or set grad_clip_norm"
                )
            if run.iteration % config.validation_every == 0 or run.iteration == config.meta_iterations:
                validate()
            cancelled, budget_spent = stop_requested()
            if cancelled:
                raise MetaTrainingCancelled(f"cancelled at meta-iteration {run.iteration}")
            if budget_spent:
                stop_reason = "time budget"
                break
            if not finite:
                break  # the trajectory's parameters may be ruined: start a fresh task
            batch.truncate()
        run.trajectory += 1
        if checkpoint_path is not None and run.iteration - last_checkpoint >= config.checkpoint_every:
            if ranks.main:
                save_checkpoint(checkpoint_path, run.state(elapsed()))
            last_checkpoint = run.iteration

    if stop_reason is not None and run.history and "validation_loss" not in run.history[-1]:
        validate()  # the weights at the budget's end get their chance too
    if checkpoint_path is not None and ranks.main:
        save_checkpoint(checkpoint_path, run.state(elapsed()))
    run.net.load_state_dict(run.best_weights)
    return MetaTrainResult(
        net=run.net,
        best_validation_loss=run.best_validation,
        best_iteration=run.best_iteration,
        iterations=run.iteration,
        skipped_nonfinite=run.skipped,
        wall_seconds=elapsed(),
        device=str(device),
        history=run.history,
        stop_reason=stop_reason or "completed",
        config=config,
    )


def _meta_gradient(run: _Run, meta_loss: torch.Tensor) -> tuple[bool, float | None]:
    """Backpropagate this rank's meta-loss and average the meta-gradient over the ranks.

    Returns whether every rank's meta-loss and meta-gradient were finite (one rank's NaN skips
    the step on all of them), and the meta-loss (the ranks' mean) when they were.
    """
    run.meta_optimizer.zero_grad(set_to_none=True)
    finite = bool(torch.isfinite(meta_loss))
    if finite:
        meta_loss.backward()
        finite = _meta_gradient_is_finite(run.net)
    value = float(meta_loss.detach()) if finite else None
    return average_meta_gradient(list(run.net.parameters()), finite, value, run.ranks)
