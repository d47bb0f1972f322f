"""MLflow side of a search: the search's run is the parent of one nested run per trial (its
params, its validation curve, whether it was pruned), and the winning recipe goes into the
optimizer's manifest (``provenance.search``) and the version's ``l2l.search`` tag."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from l2l_plugin.artifacts import Provenance, TrainedOptimizer, save_trained_optimizer
from l2l_plugin.pipeline import MetaTrainOutcome
from l2l_plugin.training import MetaTrainCallback, MetaTrainConfig
from l2l_registry.conventions import TAG_FAMILY
from l2l_registry.quiet import quiet
from l2l_registry.tracking import MlflowMetricsLogger, flatten

TAG_PARENT_RUN = "mlflow.parentRunId"  # what makes MLflow show a run nested under another
TAG_SEARCH_TRIAL = "l2l.search.trial"
TAG_SEARCH_STATE = "l2l.search.state"  # COMPLETE, PRUNED or FAIL
TAG_SEARCH_PRUNED = "l2l.search.pruned"  # "true" / "false"
TAG_SEARCH_DEFAULTS = "l2l.search.defaults"  # "true" on the trial that ran the default recipe
METRIC_TRIAL_VALUE = "search.trial_value"
PARENT_RUN_ATTR = "l2l.parent_run_id"  # study user attr: a resumed CLI search keeps its run


class MlflowTrialObserver:
    """A nested MLflow run per trial, under ``parent_run_id``."""

    def __init__(self, mlflow_client: Any, parent_run_id: str, family: str, echo: bool = False) -> None:
        self.client = mlflow_client
        self.parent_run_id = parent_run_id
        self.experiment_id = mlflow_client.get_run(parent_run_id).info.experiment_id
        self.family = family
        self.echo = echo
        self._runs: dict[int, tuple[str, MlflowMetricsLogger]] = {}

    @quiet
    def trial_started(self, number: int, labels: Mapping[str, Any], config: MetaTrainConfig) -> MetaTrainCallback:
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{number}",
            tags={
                TAG_PARENT_RUN: self.parent_run_id,
                TAG_FAMILY: self.family,
                TAG_SEARCH_TRIAL: str(number),
                TAG_SEARCH_DEFAULTS: str(not labels).lower(),
            },
        )
        run_id = run.info.run_id
        params = {**flatten(dict(labels), "search"), **flatten(config.model_dump(mode="json"), "meta")}
        items = [Param(key, value) for key, value in params.items()]
        for start in range(0, len(items), 100):  # log_batch takes at most 100 params
            self.client.log_batch(run_id, params=items[start : start + 100])
        logger = MlflowMetricsLogger(self.client, run_id)
        self._runs[number] = (run_id, logger)
        if self.echo:
            print(f"trial {number}: {'the defaults' if not labels else dict(labels)}", file=sys.stderr, flush=True)
        return logger

    @quiet
    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        run_id, _ = self._runs.pop(number)  # its logger flushed when the trial's meta-training ended
        self.client.set_tag(run_id, TAG_SEARCH_STATE, state)
        self.client.set_tag(run_id, TAG_SEARCH_PRUNED, str(state == "PRUNED").lower())
        if value is not None:
            self.client.log_metric(run_id, METRIC_TRIAL_VALUE, value)
        self.client.set_terminated(run_id, "FAILED" if state == "FAIL" else "FINISHED")
        if self.echo:
            shown = "-" if value is None else f"{value:.4g}"
            print(f"trial {number}: {state.lower()}, validation {shown}", file=sys.stderr, flush=True)


class EchoObserver:
    """Trials on stderr only (a search without ``--register``)."""

    def trial_started(self, number: int, labels: Mapping[str, Any], config: MetaTrainConfig) -> MetaTrainCallback:
        print(f"trial {number}: {'the defaults' if not labels else dict(labels)}", file=sys.stderr, flush=True)
        return MetaTrainCallback()

    def trial_finished(self, number: int, state: str, value: float | None) -> None:
        shown = "-" if value is None else f"{value:.4g}"
        print(f"trial {number}: {state.lower()}, validation {shown}", file=sys.stderr, flush=True)


def record_search(outcome: MetaTrainOutcome, search: Mapping[str, Any]) -> MetaTrainOutcome:
    """The search's summary into the optimizer's manifest (``provenance.search``), files rewritten."""
    manifest = outcome.trained.manifest
    provenance = Provenance.model_validate({**manifest.provenance.model_dump(mode="json"), "search": dict(search)})
    updated = manifest.model_copy(update={"provenance": provenance})
    trained = TrainedOptimizer(updated, outcome.trained.net)
    save_trained_optimizer(outcome.optimizer_dir, trained)
    outcome.trained = trained
    return outcome
