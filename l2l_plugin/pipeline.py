"""Meta-train, evaluate and write a trained optimizer's files: what ``l2l meta-train`` runs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from l2l_plugin import __version__
from l2l_plugin.artifacts import (
    OptimizerManifest,
    Provenance,
    TrainedOptimizer,
    git_commit,
    load_trained_optimizer,
    save_trained_optimizer,
)
from l2l_plugin.evaluation import EvaluationReport, evaluate, plot_loss_curves
from l2l_plugin.families import TaskFamily, make_family
from l2l_plugin.optimizer import LSTMOptimizerNet
from l2l_plugin.optimizer.cost import CostProfile, measure_cost_profile
from l2l_plugin.training import (
    MetaTrainCallback,
    MetaTrainConfig,
    MetaTrainingCancelled,
    MetaTrainingDiverged,
    MetaTrainResult,
    cpu_threads,
    meta_train,
    resolve_device,
)
from l2l_plugin.training.config import EvaluationConfig, resolve_meta_train_config
from l2l_plugin.training.distributed import current_ranks
from l2l_plugin.training.presets import deep_merge
from l2l_plugin.training.threads import task_coordinates

OPTIMIZER_DIR = "optimizer"
EVALUATION_NAME = "evaluation.json"
PLOT_NAME = "loss_curves.png"
CHECKPOINT_DIR = "checkpoint"

# The phases of a run, in order; publishing is the registry's (l2l_registry, the service).
PHASE_META_TRAINING = "meta-training"
PHASE_EVALUATING = "evaluating"
PHASE_PUBLISHING = "publishing"

# Why meta-training ended: MetaTrainResult.stop_reason ("completed", "time budget"), and the
# reasons of runs that end with an exception (recorded by the registry and the service).
STOP_COMPLETED = "completed"
STOP_TIME_BUDGET = "time budget"
STOP_CANCELLED = "cancelled"
STOP_DIVERGED = "diverged"
STOP_FAILED = "failed"


@dataclass(frozen=True)
class PhaseProgress:
    """Where a run is: ``phase``, and for ``evaluating`` the optimizers done out of ``total``."""

    phase: str
    done: int | None = None
    total: int | None = None

    def describe(self) -> str:
        if self.phase == PHASE_EVALUATING and self.total is not None:
            return f"{self.phase}: {self.done or 0} of {self.total} optimizers done"
        return self.phase


PhaseHook = Callable[[PhaseProgress], None]


def stop_reason_of(exc: BaseException | None) -> str:
    """The stop reason of a run that ended with ``exc`` (None: it ended normally)."""
    if exc is None:
        return STOP_COMPLETED
    if (reason := getattr(exc, "stop_reason", None)) is not None:
        return str(reason)
    if isinstance(exc, MetaTrainingCancelled | KeyboardInterrupt):
        return STOP_CANCELLED
    if isinstance(exc, MetaTrainingDiverged):
        return STOP_DIVERGED
    return STOP_FAILED


@dataclass
class MetaTrainOutcome:
    directory: Path  # holds optimizer/, evaluation.json and the plot
    trained: TrainedOptimizer
    report: EvaluationReport
    stop_reason: str = STOP_COMPLETED  # MetaTrainResult.stop_reason: "completed" or "time budget"
    iterations_total: int | None = None  # the configured meta-iterations (the provenance has those done)

    @property
    def optimizer_dir(self) -> Path:
        return self.directory / OPTIMIZER_DIR


def write_evaluation(report: EvaluationReport, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / EVALUATION_NAME
    json_path.write_text(report.model_dump_json(indent=2))
    return json_path, plot_loss_curves(report, directory / PLOT_NAME)


def _cost_profile(net: LSTMOptimizerNet, config: MetaTrainConfig, device: torch.device) -> CostProfile | None:
    parameters = config.evaluation.cost_profile_parameters
    if not parameters or not current_ranks().main:
        return None
    with cpu_threads(config.cpu_threads, coordinates=parameters):
        return measure_cost_profile(net, parameters, device)


def _family(name: str, config: Mapping[str, Any] | TaskFamily | None) -> TaskFamily:
    """``config`` validated against family ``name``; a ``TaskFamily`` is taken as it is (one a
    caller validated before, or one not registered as a plugin, such as a benchmark's)."""
    return config if isinstance(config, TaskFamily) else make_family(name, config)


def _evaluate_with_phases(
    net: LSTMOptimizerNet,
    family: TaskFamily,
    family_name: str,
    config: MetaTrainConfig,
    evaluation: EvaluationConfig,
    steps: int,
    device: torch.device,
    on_phase: PhaseHook | None,
) -> EvaluationReport:
    """``evaluate`` on the run's threads; ``on_phase`` hears ``evaluating`` with the optimizers
    done / total, from 0 of them on."""

    def progress(done: int, total: int) -> None:
        if on_phase is not None:
            on_phase(PhaseProgress(PHASE_EVALUATING, done, total))

    progress(0, 1 + len(evaluation.baselines))
    with cpu_threads(config.cpu_threads, coordinates=evaluation.test_tasks * task_coordinates(family)):
        return evaluate(net, family, family_name, evaluation, steps, device, on_progress=progress)


def _manifest(
    family_name: str,
    family: TaskFamily,
    config: MetaTrainConfig,
    result: MetaTrainResult,
    report: EvaluationReport,
    device: torch.device,
) -> OptimizerManifest:
    return OptimizerManifest(
        network=config.network,
        family=family_name,
        family_config=family.model_dump(mode="json"),
        meta_training=config.model_dump(mode="json"),
        provenance=Provenance(
            library_version=__version__,
            git_commit=git_commit(),
            device=result.device,
            meta_train_seconds=round(result.wall_seconds, 2),
            meta_iterations=result.iterations,
            best_iteration=result.best_iteration,
            best_validation_loss=result.best_validation_loss,
            skipped_nonfinite=result.skipped_nonfinite,
            stop_reason=result.stop_reason,  # an extra field: Provenance allows them
        ),
        evaluation_summary=report.summary(),
        cost_profile=_cost_profile(result.net, config, device),
    )


def meta_train_and_evaluate(
    family_name: str,
    family_config: Mapping[str, Any] | TaskFamily | None,
    meta_overrides: Mapping[str, Any] | None,
    out_dir: Path | str,
    callbacks: Sequence[MetaTrainCallback] = (),
    on_phase: PhaseHook | None = None,
    *,
    family_defaults: bool = True,
) -> MetaTrainOutcome:
    """Train on ``family_name``, evaluate on held-out tasks, write everything under ``out_dir``.

    ``family_config`` may be the family already validated (a ``TaskFamily``): a caller that
    validated it before (the registry, to open its run) does not pay for it twice.
    ``family_defaults`` False trains without the family's ``meta_train_defaults`` (the preset alone).
    A checkpoint under ``out_dir/checkpoint`` lets a stopped run resume with the same call.
    ``on_phase`` hears when meta-training and evaluation start, and after every optimizer
    evaluated (an exception it raises stops the run there).
    """
    family = _family(family_name, family_config)
    config = resolve_meta_train_config(family, meta_overrides, family_defaults=family_defaults)
    out = Path(out_dir)
    if on_phase is not None:
        on_phase(PhaseProgress(PHASE_META_TRAINING))
    result = meta_train(family, config, checkpoint_dir=out / CHECKPOINT_DIR, callbacks=callbacks)
    config = result.config or config  # as trained: a warm start may have chosen network.nominal
    device = resolve_device(config.device)
    report = _evaluate_with_phases(
        result.net, family, family_name, config, config.evaluation, config.evaluation_steps, device, on_phase
    )
    trained = TrainedOptimizer(_manifest(family_name, family, config, result, report, device), result.net)
    if current_ranks().main:  # the other ranks of a distributed run hold the same, and never write
        save_trained_optimizer(out / OPTIMIZER_DIR, trained)
        write_evaluation(report, out)
        (out / "history.json").write_text(json.dumps(result.history))
    return MetaTrainOutcome(out, trained, report, result.stop_reason, config.meta_iterations)


def evaluate_trained(
    optimizer_dir: Path | str,
    family_name: str | None = None,
    family_config: Mapping[str, Any] | TaskFamily | None = None,
    evaluation: Mapping[str, Any] | None = None,
    steps: int | None = None,
    device: str = "auto",
    on_phase: PhaseHook | None = None,
) -> EvaluationReport:
    """Evaluate saved files on their own family, or on another config (generalisation).

    ``family_config`` may be a ``TaskFamily`` (as in meta_train_and_evaluate). ``on_phase``
    hears ``evaluating`` with the optimizers done / total, as in meta_train_and_evaluate.
    """
    trained = load_trained_optimizer(optimizer_dir)
    manifest = trained.manifest
    name = family_name or manifest.family
    config = family_config if family_config is not None else (manifest.family_config if name == manifest.family else {})
    family = _family(name, config)
    trained_config = MetaTrainConfig.model_validate(manifest.meta_training)
    eval_config = EvaluationConfig.model_validate(
        deep_merge(trained_config.evaluation.model_dump(), evaluation or {})
    )
    return _evaluate_with_phases(
        trained.net,
        family,
        name,
        trained_config,
        eval_config,
        steps or trained_config.evaluation_steps,
        resolve_device(device),
        on_phase,
    )
