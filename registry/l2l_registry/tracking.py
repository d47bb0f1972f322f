"""A meta-training run's experiment, params and metrics."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from l2l_plugin.evaluation import EvaluationReport
from l2l_plugin.text import clip
from l2l_plugin.training import MetaTrainCallback, MetaTrainProgress
from l2l_registry.conventions import (
    EVAL_METRIC_PREFIX,
    METRIC_BEST_VALIDATION_LOSS,
    METRIC_META_LOSS,
    METRIC_SKIPPED,
    METRIC_VALIDATION_LOSS,
)

if TYPE_CHECKING:
    from l2l_registry.store import Store

# MLflow rejects longer param values; a long list (step_weights) is cut, the full config is in
# the optimizer's optimizer.json artifact anyway.
MAX_PARAM_LENGTH = 6000


def flatten(config: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """``{"a": {"b": 1}}`` → ``{"prefix.a.b": "1"}``; lists as JSON."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            out[name] = clip(text, MAX_PARAM_LENGTH)
    return out


def evaluation_metrics(report: EvaluationReport) -> dict[str, float]:
    """The report's summary as metrics (booleans as 0/1; non-finite values kept as such)."""
    metrics: dict[str, float] = {}
    for key, value in report.summary().items():
        if isinstance(value, bool):
            metrics[EVAL_METRIC_PREFIX + key] = float(value)
        elif isinstance(value, int | float):
            metrics[EVAL_METRIC_PREFIX + key] = float(value)
    metrics[EVAL_METRIC_PREFIX + "learned.diverged"] = float(report.optimizers["learned"].diverged)
    return metrics


class MlflowMetricsLogger(MetaTrainCallback):
    """Meta-training metrics over time, logged in batches.

    One request per iteration would make a remote server the bottleneck of meta-training, so
    metrics are buffered and sent every ``flush_seconds`` (and at validations and the run's end).
    """

    def __init__(self, client: Any, run_id: str, flush_seconds: float = 5.0, max_buffer: int = 900) -> None:
        self.client = client
        self.run_id = run_id
        self.flush_seconds = flush_seconds
        self.max_buffer = max_buffer  # log_batch accepts at most 1000 metrics
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()

    def _add(self, key: str, value: float | None, step: int) -> None:
        from mlflow.entities import Metric

        if value is None:
            return
        self._buffer.append(Metric(key, float(value), int(time.time() * 1000), step))

    def on_iteration(self, progress: MetaTrainProgress) -> None:
        if progress.meta_loss is not None and math.isfinite(progress.meta_loss):
            self._add(METRIC_META_LOSS, progress.meta_loss, progress.iteration)
        self._add(METRIC_SKIPPED, progress.skipped_nonfinite, progress.iteration)
        if len(self._buffer) >= self.max_buffer or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def on_validation(self, progress: MetaTrainProgress) -> None:
        self._add(METRIC_VALIDATION_LOSS, progress.validation_loss, progress.iteration)
        self._add(METRIC_BEST_VALIDATION_LOSS, progress.best_validation_loss, progress.iteration)
        self.flush()

    def on_end(self, outcome: object) -> None:
        """The run ended (finished or not): what is buffered goes out now."""
        self.flush()

    def flush(self) -> None:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            self.client.log_batch(self.run_id, metrics=batch, synchronous=True)
        self._last_flush = time.monotonic()


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
