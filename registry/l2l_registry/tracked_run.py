"""One MLflow run around one meta-training, and how its outcome is logged and published.

Order matters for "no half versions": params and metrics go to the run while meta-training
runs; after it, the evaluation, the artifacts and the pyfunc are logged, the promotion gate
decides, and only then is the model version created — in one call, with all of its tags.
Any failure before that leaves a FAILED run and no version.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

from l2l_plugin import make_family
from l2l_plugin.evaluation import EvaluationReport
from l2l_plugin.families import TaskFamily
from l2l_plugin.pipeline import (
    EVALUATION_NAME,
    PHASE_EVALUATING,
    PHASE_PUBLISHING,
    PLOT_NAME,
    MetaTrainOutcome,
    PhaseHook,
    PhaseProgress,
    resolve_meta_train_config,
    stop_reason_of,
)
from l2l_plugin.text import clip
from l2l_plugin.training import MetaTrainCallback, MetaTrainingCancelled
from l2l_registry.conventions import (
    CHAMPION_ALIAS,
    MAX_TAG_LENGTH,
    MODEL_ARTIFACT_NAME,
    OPTIMIZER_ARTIFACT,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    TAG_FAMILY,
    TAG_FAMILY_CONFIG_HASH,
    TAG_PHASE,
    TAG_PHASE_PROGRESS,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_REGISTERED_VERSION,
    TAG_STOP_REASON,
    config_hash,
    model_name,
    run_optimizer_uri,
    version_uri,
)
from l2l_registry.errors import PublishError, is_not_found
from l2l_registry.gate import GateDecision, champion_lock, compare_with_champion, decide
from l2l_registry.loading import load_trained
from l2l_registry.model_version import MODEL_CODE, PublishResult, describe, pip_requirements, version_tags
from l2l_registry.quiet import quiet
from l2l_registry.redaction import redact
from l2l_registry.store import Store, client, configure
from l2l_registry.tracking import MlflowMetricsLogger, ensure_experiment, evaluation_metrics, flatten

HISTORY_NAME = "history.json"


class MetaTrainingRun:
    """One MLflow run around one meta-training; ``publish`` turns its outcome into a version.

        with MetaTrainingRun("quadratic", {"dim": 10}, {"meta_iterations": 500}) as run:
            outcome = meta_train_and_evaluate("quadratic", run.family, {...}, out, [run.callback])
            result = run.publish(outcome)

    (:func:`l2l_registry.publish.meta_train_and_publish` does all of that in one call.)
    Leaving the block with an exception ends the run FAILED (KILLED when cancelled). The run's
    tags follow it: ``l2l.phase`` (pass :meth:`on_phase` as ``meta_train_and_evaluate``'s
    ``on_phase``; ``publish`` sets ``publishing``) and ``l2l.stop_reason``.
    """

    def __init__(
        self,
        family_name: str,
        family_config: Mapping[str, Any] | TaskFamily | None = None,
        meta_overrides: Mapping[str, Any] | None = None,
        *,
        run_name: str | None = None,
        store: Store | None = None,
        run_id: str | None = None,
    ) -> None:
        """``family_config``: a mapping, validated on entering, or the family already validated.

        ``run_id`` reopens an existing run (a queued or resumed service job keeps its run);
        logging its params again is harmless, MLflow accepts a param re-logged unchanged."""
        self.family_name = family_name
        self.family_config = family_config
        self.meta_overrides = dict(meta_overrides or {})
        self.run_name = run_name
        self.store = store
        self.run_id: str | None = run_id
        self.family: TaskFamily | None = family_config if isinstance(family_config, TaskFamily) else None
        self.callback: MetaTrainCallback = MetaTrainCallback()
        self._published: PublishResult | None = None

    # -- the run ---------------------------------------------------------------------------

    @quiet
    def __enter__(self) -> MetaTrainingRun:
        import mlflow
        from mlflow.entities import Param

        if self.family is None:  # validated before any run exists
            self.family = make_family(self.family_name, self.family_config)  # type: ignore[arg-type]
        config = resolve_meta_train_config(self.family, self.meta_overrides)
        self.store = self.store or configure()
        self.client = client(self.store)
        experiment_id = ensure_experiment(self.client, self.store, model_name(self.family_name))
        resolved_family = self.family.model_dump(mode="json")
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
        self.callback = MlflowMetricsLogger(self.client, self.run_id)  # flushed when meta-training ends
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

    # -- logging and publishing ------------------------------------------------------------

    @quiet
    def log_results(self, outcome: MetaTrainOutcome, on_phase: PhaseHook | None = None) -> str:
        """The publishing phase begins: evaluation metrics and the optimizer's files go to the run.

        Returns the URI ``load_optimizer`` takes for them (``runs:/<run_id>/optimizer``); a run
        that is not registered ends here. ``on_phase`` hears that publishing started.
        """
        import mlflow
        from mlflow.entities import RunTag

        if self.run_id is None:
            raise PublishError("log_results() must be called inside `with MetaTrainingRun(...)`")
        if outcome.trained.manifest.family != self.family_name:
            raise PublishError(
                f"the outcome was meta-trained on {outcome.trained.manifest.family!r}, "
                f"this run is for {self.family_name!r}"
            )
        progress = PhaseProgress(PHASE_PUBLISHING)
        self.client.log_batch(
            self.run_id, tags=[RunTag(TAG_PHASE, progress.phase), RunTag(TAG_STOP_REASON, outcome.stop_reason)]
        )
        if on_phase is not None:
            on_phase(progress)
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
        return run_optimizer_uri(self.run_id)

    @quiet
    def publish(self, outcome: MetaTrainOutcome, on_phase: PhaseHook | None = None) -> PublishResult:
        """:meth:`log_results`, the pyfunc, the gate, then the version (and maybe the promotion)."""
        if self.run_id is None:
            raise PublishError("publish() must be called inside `with MetaTrainingRun(...)`")
        if self._published is not None:
            raise PublishError(f"this run is already published as version {self._published.version}")
        name = model_name(self.family_name)
        self.log_results(outcome, on_phase)
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
            trained = load_trained(version_uri(self.family_name, champion_version), store=self.store)
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
            description=describe(outcome.report),
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
                clip(redact(f"{decision.reason}; but setting the alias failed: {exc}"), MAX_TAG_LENGTH),
            )
            raise
