"""Publish a meta-training run: one MLflow run, then one model version of ``l2l-<family>``.

Order matters for "no half versions": params and metrics go to the run while meta-training
runs; after it, the evaluation, the artifacts and the pyfunc are logged, the promotion gate
decides, and only then is the model version created — in one call, with all of its tags.
Any failure before that leaves a FAILED run and no version.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version as dist_version
from pathlib import Path
from types import TracebackType
from typing import Any

from l2l_plugin import make_family
from l2l_plugin.evaluation import EvaluationReport
from l2l_plugin.evaluation.report import LEARNED
from l2l_plugin.pipeline import (
    EVALUATION_NAME,
    PHASE_EVALUATING,
    PHASE_PUBLISHING,
    PLOT_NAME,
    MetaTrainOutcome,
    PhaseHook,
    PhaseProgress,
    meta_train_and_evaluate,
    resolve_meta_train_config,
    stop_reason_of,
)
from l2l_plugin.training import MetaTrainCallback, MetaTrainingCancelled

from l2l_registry.conventions import (
    CHAMPION_ALIAS,
    MODEL_ARTIFACT_NAME,
    OPTIMIZER_ARTIFACT,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    TAG_BEATS_BASELINES,
    TAG_CHAMPION_COMPARISON,
    TAG_COST_PROFILE,
    TAG_EVALUATION,
    TAG_FAMILY,
    TAG_FAMILY_CONFIG,
    TAG_FAMILY_CONFIG_HASH,
    TAG_GIT_COMMIT,
    TAG_LIBRARY_VERSION,
    TAG_PHASE,
    TAG_PHASE_PROGRESS,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_REGISTERED_VERSION,
    TAG_SEARCH,
    TAG_STOP_REASON,
    canonical_json,
    config_hash,
    model_name,
)
from l2l_registry.errors import PublishError, is_not_found
from l2l_registry.gate import ChampionComparison, GateDecision, champion_lock, compare_with_champion, decide
from l2l_registry.loading import load_trained
from l2l_registry.quiet import quiet
from l2l_registry.redaction import redact
from l2l_registry.store import Store, client, configure
from l2l_registry.tracking import MlflowMetricsLogger, evaluation_metrics, flatten

MODEL_CODE = Path(__file__).with_name("model_code.py")
HISTORY_NAME = "history.json"
MAX_TAG_LENGTH = 5000  # model-version tag values are limited; the full data is in the artifacts


@dataclass(frozen=True)
class PublishResult:
    family: str
    model_name: str
    version: str
    run_id: str
    promoted: bool
    reason: str
    comparison: ChampionComparison | None
    report: EvaluationReport

    @property
    def version_uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    @property
    def champion_uri(self) -> str:
        return f"models:/{self.model_name}@{CHAMPION_ALIAS}"


def pip_requirements() -> list[str]:
    """Given explicitly so that log_model does not spend seconds inferring them."""
    import mlflow
    import torch

    requirements = []
    for dist in ("l2l-registry", "l2l-plugin"):
        try:
            requirements.append(f"{dist}=={dist_version(dist)}")
        except PackageNotFoundError:
            requirements.append(dist)
    requirements += [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}"]
    return requirements


def ensure_experiment(mlflow_client: Any, store: Store, name: str) -> str:
    """The family's experiment; on the embedded store its artifacts live under the data dir."""
    from mlflow.exceptions import MlflowException

    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = (store.artifact_root / name).as_uri() if store.artifact_root is not None else None
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException as exc:  # created concurrently by another publisher
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow_client.get_experiment_by_name(name).experiment_id


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TAG_LENGTH else text[: MAX_TAG_LENGTH - 3] + "..."


def version_tags(outcome: MetaTrainOutcome, decision: GateDecision) -> dict[str, str]:
    manifest = outcome.trained.manifest
    tags = {
        TAG_FAMILY: manifest.family,
        TAG_FAMILY_CONFIG: _clip(canonical_json(manifest.family_config)),
        TAG_FAMILY_CONFIG_HASH: config_hash(manifest.family_config),
        TAG_LIBRARY_VERSION: manifest.provenance.library_version,
        TAG_GIT_COMMIT: manifest.provenance.git_commit or "unknown",
        TAG_EVALUATION: _clip(json.dumps(outcome.report.summary(), sort_keys=True)),
        TAG_BEATS_BASELINES: str(outcome.report.beats_every_baseline).lower(),
        TAG_PROMOTION: PROMOTION_PROMOTED if decision.promote else PROMOTION_REJECTED,
        TAG_PROMOTION_REASON: _clip(decision.reason),
    }
    if decision.comparison is not None:
        tags[TAG_CHAMPION_COMPARISON] = json.dumps(decision.comparison.as_dict(), sort_keys=True)
    if manifest.cost_profile is not None:
        tags[TAG_COST_PROFILE] = manifest.cost_profile.model_dump_json()
    search = getattr(manifest.provenance, "search", None)  # a recipe search's summary (l2l_registry.search)
    if search:
        from l2l_registry.search.run import search_tag

        tags[TAG_SEARCH] = search_tag(search)
    return tags


def _describe(report: EvaluationReport) -> str:
    learned, best = report.optimizers[LEARNED], report.optimizers[report.best_baseline]
    return (
        f"LSTM optimizer meta-trained on {report.family}. On {len(report.test_seeds)} held-out instances, "
        f"{report.steps} steps: final loss mean {learned.final_loss_mean:.4g} (best tuned baseline "
        f"{report.best_baseline}: {best.final_loss_mean:.4g}), geomean {learned.final_loss_geomean:.4g} "
        f"({best.final_loss_geomean:.4g}), win rate {report.win_rate_vs_best_baseline:.0%}."
    )


class MetaTrainingRun:
    """One MLflow run around one meta-training; ``publish`` turns its outcome into a version.

        with MetaTrainingRun("quadratic", {"dim": 10}, {"meta_iterations": 500}) as run:
            outcome = meta_train_and_evaluate("quadratic", {"dim": 10}, {...}, out, [run.callback])
            result = run.publish(outcome)

    Leaving the block with an exception ends the run FAILED (KILLED when cancelled). The run's
    tags follow it: ``l2l.phase`` (pass :meth:`on_phase` as ``meta_train_and_evaluate``'s
    ``on_phase``; ``publish`` sets ``publishing``) and ``l2l.stop_reason``.
    """

    def __init__(
        self,
        family_name: str,
        family_config: Mapping[str, Any] | None = None,
        meta_overrides: Mapping[str, Any] | None = None,
        *,
        run_name: str | None = None,
        store: Store | None = None,
        run_id: str | None = None,
    ) -> None:
        """``run_id`` reopens an existing run (a queued or resumed service job keeps its run);
        logging its params again is harmless, MLflow accepts a param re-logged unchanged."""
        self.family_name = family_name
        self.family_config = dict(family_config or {})
        self.meta_overrides = dict(meta_overrides or {})
        self.run_name = run_name
        self.store = store
        self.run_id: str | None = run_id
        self.callback: MetaTrainCallback = MetaTrainCallback()
        self._metrics: MlflowMetricsLogger | None = None
        self._published: PublishResult | None = None

    # -- the run ---------------------------------------------------------------------------

    @quiet
    def __enter__(self) -> MetaTrainingRun:
        import mlflow
        from mlflow.entities import Param

        family = make_family(self.family_name, self.family_config)  # validates before any run exists
        config = resolve_meta_train_config(family, self.meta_overrides)
        self.store = self.store or configure()
        self.client = client(self.store)
        experiment_id = ensure_experiment(self.client, self.store, model_name(self.family_name))
        resolved_family = family.model_dump(mode="json")
        if self.run_id is not None:
            mlflow.start_run(run_id=self.run_id)  # status RUNNING again
        else:
            run = mlflow.start_run(
                experiment_id=experiment_id,
                run_name=self.run_name,
                nested=mlflow.active_run() is not None,  # inside a user's run: become its child
                tags={
                    TAG_FAMILY: self.family_name,
                    TAG_FAMILY_CONFIG_HASH: config_hash(resolved_family),
                },
            )
            self.run_id = run.info.run_id
        params = {
            "family": self.family_name,
            **flatten(resolved_family, "family"),
            **flatten(config.model_dump(mode="json"), "meta"),
        }
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        self._metrics = MlflowMetricsLogger(self.client, self.run_id)
        self.callback = self._metrics
        return self

    @quiet
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import mlflow

        if exc is not None and self.run_id is not None:
            try:
                self.client.set_tag(self.run_id, TAG_STOP_REASON, stop_reason_of(exc))
            except Exception:  # noqa: BLE001 - the original exception is the one that matters
                pass
        try:
            if self._metrics is not None:
                self._metrics.flush()
        except Exception:
            if exc_type is None:
                mlflow.end_run("FAILED")
                raise
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt | MetaTrainingCancelled):
            status = "KILLED"
        else:
            status = "FAILED"
        mlflow.end_run(status)

    @quiet
    def on_phase(self, progress: PhaseProgress) -> None:
        """The run's ``l2l.phase`` tag (and ``l2l.phase_progress``, optimizers evaluated / total)."""
        if self.run_id is None:
            return
        from mlflow.entities import RunTag

        tags = [RunTag(TAG_PHASE, progress.phase)]
        if progress.phase == PHASE_EVALUATING and progress.total is not None:
            tags.append(RunTag(TAG_PHASE_PROGRESS, f"{progress.done or 0}/{progress.total}"))
        self.client.log_batch(self.run_id, tags=tags)

    # -- publishing ------------------------------------------------------------------------

    @quiet
    def publish(self, outcome: MetaTrainOutcome, on_phase: PhaseHook | None = None) -> PublishResult:
        """Log evaluation, files and pyfunc, run the gate, then create the version (and maybe promote).

        ``on_phase`` hears that publishing started (the run's tags say so too).
        """
        if self.run_id is None:
            raise PublishError("publish() must be called inside `with MetaTrainingRun(...)`")
        if self._published is not None:
            raise PublishError(f"this run is already published as version {self._published.version}")
        if outcome.trained.manifest.family != self.family_name:
            raise PublishError(
                f"the outcome was meta-trained on {outcome.trained.manifest.family!r}, "
                f"this run is for {self.family_name!r}"
            )
        name = model_name(self.family_name)
        self.mark_published_phase(outcome, on_phase)
        self._log_results(outcome)
        model = self._log_model(outcome)
        # Read, compare and move the champion as one step (no compare-and-set in MLflow).
        with champion_lock(name, self.store):
            decision = self._gate(
                outcome.report, threads=outcome.trained.manifest.meta_training.get("cpu_threads", 1)
            )
            version = self._register(name, model, outcome, decision)
            if decision.promote:
                self._promote(name, version, decision)
        self.client.set_tag(self.run_id, TAG_REGISTERED_VERSION, version)
        self.client.set_tag(
            self.run_id, TAG_PROMOTION, PROMOTION_PROMOTED if decision.promote else PROMOTION_REJECTED
        )
        self._published = PublishResult(
            family=self.family_name,
            model_name=name,
            version=version,
            run_id=self.run_id,
            promoted=decision.promote,
            reason=decision.reason,
            comparison=decision.comparison,
            report=outcome.report,
        )
        return self._published

    def mark_published_phase(self, outcome: MetaTrainOutcome, on_phase: PhaseHook | None = None) -> None:
        """Tags ``l2l.phase`` publishing and ``l2l.stop_reason`` (known once meta-training ended)."""
        from mlflow.entities import RunTag

        assert self.run_id is not None
        progress = PhaseProgress(PHASE_PUBLISHING)
        self.client.log_batch(
            self.run_id, tags=[RunTag(TAG_PHASE, progress.phase), RunTag(TAG_STOP_REASON, outcome.stop_reason)]
        )
        if on_phase is not None:
            on_phase(progress)

    def _log_results(self, outcome: MetaTrainOutcome) -> None:
        import mlflow

        assert self.run_id is not None
        if self._metrics is not None:
            self._metrics.flush()
        provenance = outcome.trained.manifest.provenance
        metrics = evaluation_metrics(outcome.report)
        for key in ("meta_train_seconds", "meta_iterations", "best_iteration", "best_validation_loss"):
            value = getattr(provenance, key)
            if value is not None:
                metrics[f"meta_train.{key}"] = float(value)
        mlflow.log_metrics(metrics, run_id=self.run_id)
        for file_name in (EVALUATION_NAME, PLOT_NAME, HISTORY_NAME):
            if (outcome.directory / file_name).is_file():
                self.client.log_artifact(self.run_id, str(outcome.directory / file_name))
        self.client.log_artifacts(self.run_id, str(outcome.optimizer_dir), OPTIMIZER_ARTIFACT)

    def _log_model(self, outcome: MetaTrainOutcome) -> Any:
        """The pyfunc, as models-from-code (nothing pickled); returns mlflow's ``ModelInfo``."""
        import mlflow

        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=str(MODEL_CODE),
            artifacts={OPTIMIZER_ARTIFACT: str(outcome.optimizer_dir)},
            pip_requirements=pip_requirements(),
            metadata={"l2l_family": self.family_name},
        )

    def _gate(self, report: EvaluationReport, threads: int | None = 1) -> GateDecision:
        from mlflow.exceptions import MlflowException

        name = model_name(self.family_name)
        try:
            champion = self.client.get_model_version_by_alias(name, CHAMPION_ALIAS)
        except MlflowException as exc:
            if not is_not_found(exc):
                raise
            return decide(report, None)
        if not report.beats_every_baseline:  # no need to run the champion
            return decide(report, None)
        champion_version = str(champion.version)  # an int in some stores
        try:
            trained = load_trained(f"models:/{name}/{champion_version}", store=self.store)
            comparison = compare_with_champion(report, trained, champion_version, threads)
        except Exception as exc:  # noqa: BLE001 - any failure blocks promotion, with the reason
            return decide(report, None, champion_error=f"version {champion_version}: {exc}")
        return decide(report, comparison)

    def _register(self, name: str, model: Any, outcome: MetaTrainOutcome, decision: GateDecision) -> str:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(
                name,
                tags={TAG_FAMILY: self.family_name},
                description=f"LSTM optimizers meta-trained on the {self.family_name!r} task family.",
            )
        except MlflowException as exc:
            if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
        # One call creates the version with every tag: there is no moment where it exists untagged.
        model_version = self.client.create_model_version(
            name,
            source=model.model_uri,
            run_id=self.run_id,
            tags=version_tags(outcome, decision),
            description=_describe(outcome.report),
            model_id=model.model_id,
        )
        return str(model_version.version)

    def _promote(self, name: str, version: str, decision: GateDecision) -> None:
        try:
            self.client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        except Exception as exc:
            # The version exists and says "champion"; correct that before reporting the failure.
            self.client.set_model_version_tag(name, version, TAG_PROMOTION, PROMOTION_REJECTED)
            self.client.set_model_version_tag(
                name,
                version,
                TAG_PROMOTION_REASON,
                _clip(redact(f"{decision.reason}; but setting the alias failed: {exc}")),
            )
            raise


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
    """Meta-train, evaluate, log and register in one call.

    With ``out_dir`` None the files go to a temporary folder that is deleted before returning
    (everything is in MLflow by then), so the returned ``outcome.directory`` no longer exists.
    """
    with MetaTrainingRun(family_name, family_config, meta_overrides, run_name=run_name, store=store) as run:

        def phase(progress: PhaseProgress) -> None:
            run.on_phase(progress)
            if on_phase is not None:
                on_phase(progress)

        if out_dir is None:
            with tempfile.TemporaryDirectory(prefix="l2l-meta-train-") as tmp:
                outcome = meta_train_and_evaluate(
                    family_name, family_config, meta_overrides, tmp, [run.callback, *callbacks], phase
                )
                return outcome, run.publish(outcome, on_phase)
        outcome = meta_train_and_evaluate(
            family_name, family_config, meta_overrides, out_dir, [run.callback, *callbacks], phase
        )
        return outcome, run.publish(outcome, on_phase)
