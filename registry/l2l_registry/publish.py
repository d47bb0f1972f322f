"""Meta-train, log and publish in one call: :func:`meta_train_and_publish`.

Every publisher goes through it — ``l2l meta-train --register``, ``l2l demo``, a recipe
search's winner and the service's jobs — so the run's lifecycle, its tags and the gate are
written once (:mod:`l2l_registry.tracked_run`). What differs between them is how they train
(the CLI shows progress, the service launches ranks and checks for cancellation): a
``train`` function with :func:`~l2l_plugin.pipeline.meta_train_and_evaluate`'s signature.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l2l_plugin.cli import Trainer
from l2l_plugin.families import TaskFamily
from l2l_plugin.pipeline import MetaTrainOutcome, PhaseHook, PhaseProgress, meta_train_and_evaluate
from l2l_plugin.training import MetaTrainCallback
from l2l_registry.model_version import PublishResult
from l2l_registry.store import Store
from l2l_registry.tracked_run import MetaTrainingRun

__all__ = ["MetaTrainingRun", "PublishResult", "PublishedRun", "meta_train_and_publish", "meta_train_and_register"]


@dataclass(frozen=True)
class PublishedRun:
    """What :func:`meta_train_and_publish` did: the outcome, its run, and what to load."""

    outcome: MetaTrainOutcome
    run_id: str
    optimizer_uri: str  # what load_optimizer() takes: the version's models:/ URI, else runs:/<id>/optimizer
    version: PublishResult | None  # None: logged in the run, not registered


def meta_train_and_publish(
    family_name: str,
    family_config: Mapping[str, Any] | TaskFamily | None = None,
    meta_overrides: Mapping[str, Any] | None = None,
    out_dir: Path | str | None = None,
    *,
    store: Store | None = None,
    register: bool = True,
    callbacks: Sequence[MetaTrainCallback] = (),
    on_phase: PhaseHook | None = None,
    run_id: str | None = None,
    run_name: str | None = None,
    train: Trainer = meta_train_and_evaluate,
) -> PublishedRun:
    """Meta-train and evaluate in one MLflow run, log the results, and (``register``) publish a
    model version of ``l2l-<family>``, promoted to champion if it passes the gate.

    The family config is validated once, before the run exists (or given validated, a
    ``TaskFamily``). ``on_phase`` hears every phase,
    publishing included; ``callbacks`` hear meta-training. ``run_id`` reopens a run created
    earlier (a service job's, made when it was queued). ``train`` does the meta-training and
    evaluation, given the validated family (default: ``meta_train_and_evaluate``).
    With ``out_dir`` None the files go to a temporary folder deleted before returning
    (everything is in MLflow by then), so the returned ``outcome.directory`` no longer exists.
    """
    with ExitStack() as stack:
        if out_dir is None:
            out_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="l2l-meta-train-"))
        run = stack.enter_context(
            MetaTrainingRun(family_name, family_config, meta_overrides, run_name=run_name, store=store, run_id=run_id)
        )

        def phase(progress: PhaseProgress) -> None:
            run.on_phase(progress)
            if on_phase is not None:
                on_phase(progress)

        assert run.family is not None and run.run_id is not None
        outcome = train(family_name, run.family, meta_overrides, out_dir, [run.callback, *callbacks], phase)
        if not register:
            return PublishedRun(outcome, run.run_id, run.log_results(outcome, on_phase), None)
        published = run.publish(outcome, on_phase)
        return PublishedRun(outcome, run.run_id, published.version_uri, published)


def meta_train_and_register(
    family_name: str,
    family_config: Mapping[str, Any] | None = None,
    meta_overrides: Mapping[str, Any] | None = None,
    out_dir: Path | str | None = None,
    callbacks: Sequence[MetaTrainCallback] = (),
    *,
    run_name: str | None = None,
    store: Store | None = None,
    on_phase: PhaseHook | None = None,
) -> tuple[MetaTrainOutcome, PublishResult]:
    """:func:`meta_train_and_publish` with ``register=True``, as ``(outcome, version)``."""
    run = meta_train_and_publish(
        family_name, family_config, meta_overrides, out_dir,
        store=store, callbacks=callbacks, on_phase=on_phase, run_name=run_name,
    )
    assert run.version is not None
    return run.outcome, run.version
