"""Meta-training: truncated backpropagation through the optimizee's training (paper, section 2).

Runs on one process or on several torch.distributed ranks (``training/distributed``): each rank
takes its own share of every meta-batch, the meta-gradients are averaged with one all-reduce,
and every decision that depends on a clock or a callback is rank 0's (``agree``), so the ranks
hold the same weights and take the same steps. Only rank 0 writes checkpoints.

The parts: ``unroll`` (one truncation and its meta-step), ``best_weights`` (the weights the run
hands back), ``validation`` (their score), ``run_state`` (what a checkpoint holds); this module
is the loop over trajectories that ties them together and the callbacks' begin and end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from l2l_plugin.errors import L2LError
from l2l_plugin.families import TaskFamily
from l2l_plugin.optimizer.rollout import OptimizeeBatch
from l2l_plugin.training.callbacks import (
    MetaTrainCallback,
    MetaTrainProgress,
    MetaTrainStart,
    begin_callbacks,
    end_callbacks,
)
from l2l_plugin.training.checkpoint import load_checkpoint, save_checkpoint
from l2l_plugin.training.config import MetaTrainConfig
from l2l_plugin.training.distributed import agree, broadcast_object, current_ranks
from l2l_plugin.training.distribution import check_distribution, sample_family
from l2l_plugin.training.result import MetaTrainResult
from l2l_plugin.training.run_state import RunState
from l2l_plugin.training.threads import cpu_threads, task_coordinates
from l2l_plugin.training.unroll import MetaStep, meta_gradient_step, truncation_meta_loss, unroll_lengths
from l2l_plugin.training.validation import Validation
from l2l_plugin.training.warm_start import choose_nominal, warm_start

__all__ = [
    "CheckpointMismatch",
    "MetaTrainResult",
    "MetaTrainingCancelled",
    "MetaTrainingDiverged",
    "meta_train",
    "resolve_device",
]


class MetaTrainingDiverged(L2LError, RuntimeError):
    """Too many non-finite meta-losses or meta-gradients in a row."""


class MetaTrainingCancelled(L2LError, RuntimeError):
    """A callback asked the run to stop."""


class CheckpointMismatch(L2LError, ValueError):
    """The checkpoint directory holds a run with another configuration (or number of ranks)."""


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return device


def meta_train(
    family: TaskFamily,
    config: MetaTrainConfig,
    *,
    checkpoint_dir: Path | str | None = None,
    callbacks: Sequence[MetaTrainCallback] = (),
) -> MetaTrainResult:
    """Meta-train an LSTM optimizer on ``family``; resumes from ``checkpoint_dir`` when it has one.

    Every callback hears ``on_begin`` first and ``on_end`` last (the result, or the exception
    then raised). The run seeds torch's CPU generator with ``config.seed`` inside
    ``torch.random.fork_rng``: the caller's RNG state is the same afterwards.
    """
    checkpoint_path = Path(checkpoint_dir) if checkpoint_dir is not None else None
    callbacks = list(callbacks)
    begin_callbacks(callbacks, MetaTrainStart(family, config, config.meta_iterations, checkpoint_path))
    try:
        # Only the CPU generator is used (the net is initialized on the CPU, task and scaling
        # draws take seeded CPU generators), so only it is forked.
        with (
            torch.random.fork_rng(devices=[]),
            cpu_threads(config.cpu_threads, coordinates=config.meta_batch_size * task_coordinates(family)),
        ):
            result = _start_loop(family, config, checkpoint_path, callbacks).run()
    except BaseException as error:
        end_callbacks(callbacks, error)
        raise
    end_callbacks(callbacks, result)
    return result


def _start_loop(
    family: TaskFamily, config: MetaTrainConfig, checkpoint_path: Path | None, callbacks: Sequence[MetaTrainCallback]
) -> _Loop:
    """The run's state, fresh, warm-started or resumed from the checkpoint."""
    device = resolve_device(config.device)
    ranks = current_ranks()
    check_distribution(family, config.family_distribution)  # before minutes of warm-start tuning
    # Tuning shards its tasks over the ranks and gathers the scores: every rank picks the same.
    config, tuned_nominal = choose_nominal(family, config, device)
    run = RunState(family, config, device, ranks)
    # Rank 0 reads the checkpoint and hands it to the others: they need no shared disk.
    saved = load_checkpoint(checkpoint_path) if checkpoint_path is not None and ranks.main else None
    if (saved := broadcast_object(saved, ranks)) is not None:
        if saved["identity"] != run.identity():
            raise CheckpointMismatch(
                "the checkpoint was written by a run with a different configuration or number of ranks"
            )
        run.restore(saved)
    elif (tuned := warm_start(run.net, family, config, device, tuned_nominal)) is not None:
        run.best.start_from(run.net)
        run.history.append({"iteration": 0, "warm_start_lr": tuned})
    return _Loop(run, Validation(family, config, device, ranks), callbacks, checkpoint_path)


class _Loop:
    """Trajectories of truncations until the iterations, the time budget or a callback end it."""

    def __init__(
        self,
        run: RunState,
        validation: Validation,
        callbacks: Sequence[MetaTrainCallback],
        checkpoint_path: Path | None,
    ) -> None:
        self.run_state = run
        self.config = run.config
        self.validation = validation
        self.callbacks = callbacks
        self.checkpoint_path = checkpoint_path
        self.started = time.perf_counter()
        self.last_checkpoint = run.iteration

    def elapsed(self) -> float:
        return self.run_state.elapsed_before + time.perf_counter() - self.started

    def progress(self, meta_loss: float | None) -> MetaTrainProgress:
        run = self.run_state
        return MetaTrainProgress(
            run.iteration,
            self.config.meta_iterations,
            meta_loss,
            run.last_validation,
            run.best.measured_score,
            run.skipped,
            self.elapsed(),
        )

    def run_fraction(self) -> float:
        fraction = self.run_state.iteration / self.config.meta_iterations
        if self.config.max_seconds is not None:
            # Rank 0's clock: every rank must pick the same horizon and learning rate.
            fraction = agree([max(fraction, self.elapsed() / self.config.max_seconds)], self.run_state.ranks)[0]
        return min(fraction, 1.0)

    def validate(self) -> None:
        run = self.run_state
        run.last_validation = self.validation.score(run.net)
        run.history.append({"iteration": run.iteration, "validation_loss": run.last_validation})
        run.best.offer(run.last_validation, run.iteration, run.net)
        for callback in self.callbacks:
            callback.on_validation(self.progress(None))

    def stop_requested(self) -> tuple[bool, bool]:
        """(cancelled, time budget spent), as rank 0's callbacks and clock say."""
        ranks = self.run_state.ranks
        cancelled = ranks.main and any(callback.should_stop() for callback in self.callbacks)
        budget = self.config.max_seconds is not None and self.elapsed() >= self.config.max_seconds
        cancelled_everywhere, budget_everywhere = agree([float(cancelled), float(budget)], ranks)
        return bool(cancelled_everywhere), bool(budget_everywhere)

    def run(self) -> MetaTrainResult:
        run, config = self.run_state, self.config
        if run.iteration == 0 and not any("validation_loss" in h for h in run.history):
            self.validate()  # the untrained optimizer is the first candidate, so "best" is never unmeasured
        stop_reason: str | None = None
        while run.iteration < config.meta_iterations and stop_reason is None:
            stop_reason = self.trajectory()
            run.trajectory += 1
            if self.checkpoint_path is not None and run.iteration - self.last_checkpoint >= config.checkpoint_every:
                self.save_checkpoint()
        if stop_reason is not None and run.history and "validation_loss" not in run.history[-1]:
            self.validate()  # the weights at the budget's end get their chance too
        if self.checkpoint_path is not None:
            self.save_checkpoint()
        run.best.load_into(run.net)
        return MetaTrainResult(
            net=run.net,
            best_validation_loss=run.best.score,
            best_iteration=run.best.iteration,
            iterations=run.iteration,
            skipped_nonfinite=run.skipped,
            wall_seconds=self.elapsed(),
            device=str(run.device),
            history=run.history,
            stop_reason=stop_reason or "completed",
            config=config,
        )

    def save_checkpoint(self) -> None:
        assert self.checkpoint_path is not None
        if self.run_state.ranks.main:
            save_checkpoint(self.checkpoint_path, self.run_state.state(self.elapsed()))
        self.last_checkpoint = self.run_state.iteration

    def trajectory(self) -> str | None:
        """One trajectory's truncations, a meta-step each; the stop reason if the budget ran out."""
        run, config = self.run_state, self.config
        horizon = config.horizon_at(self.run_fraction())
        weights = config.step_weights_for(horizon)
        trajectory_family = sample_family(run.family, config.family_distribution, config.seed, run.trajectory)
        batch = OptimizeeBatch(run.net, run.training_stack(trajectory_family), run.device)
        step = 0
        for length in unroll_lengths(config, horizon, run.trajectory):
            if run.iteration >= config.meta_iterations:
                break
            meta_loss = truncation_meta_loss(batch, step, length, weights, config.meta_loss_log_weight)
            step += length
            if meta_loss is None:
                continue
            meta_step = meta_gradient_step(
                run.net, run.meta_optimizer, meta_loss, config, run.ranks, self.run_fraction
            )
            self.record(meta_step)
            cancelled, budget_spent = self.stop_requested()
            if cancelled:
                raise MetaTrainingCancelled(f"cancelled at meta-iteration {run.iteration}")
            if budget_spent:
                return "time budget"
            if not meta_step.finite:
                break  # the trajectory's parameters may be ruined: start a fresh task
            batch.truncate()
        return None

    def record(self, meta_step: MetaStep) -> None:
        """Count the meta-iteration, tell the callbacks, and validate when it is time."""
        run, config = self.run_state, self.config
        if meta_step.finite:
            run.consecutive_nonfinite = 0
        else:
            run.skipped += 1
            run.consecutive_nonfinite += 1
        run.iteration += 1
        run.history.append(
            {"iteration": run.iteration, "meta_loss": math.nan if meta_step.meta_loss is None else meta_step.meta_loss}
        )
        for callback in self.callbacks:
            callback.on_iteration(self.progress(meta_step.meta_loss))
        if run.consecutive_nonfinite >= config.max_consecutive_nonfinite:
            raise MetaTrainingDiverged(
                f"{run.consecutive_nonfinite} non-finite meta-losses or meta-gradients in a row "
                f"(iteration {run.iteration}, {run.skipped} skipped in all); lower meta_lr or output_scale, "
                "or set grad_clip_norm"
            )
        if run.iteration % config.validation_every == 0 or run.iteration == config.meta_iterations:
            self.validate()
