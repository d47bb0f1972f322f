"""A search from start to publication: the study (trials nested under the search's MLflow run),
then the winning recipe trained to its full budget in that same run, evaluated against the tuned
baselines and published like any other run (``l2l meta-train --search``, the service's jobs)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from l2l_plugin.cli import Trainer
from l2l_plugin.families import make_family
from l2l_plugin.pipeline import MetaTrainOutcome, PhaseHook, meta_train_and_evaluate, stop_reason_of
from l2l_plugin.text import clip
from l2l_plugin.training import MetaTrainCallback, MetaTrainingCancelled
from l2l_registry.conventions import (
    MAX_TAG_LENGTH,
    TAG_FAMILY,
    TAG_FAMILY_CONFIG_HASH,
    TAG_SEARCH,
    TAG_STOP_REASON,
    canonical_json,
    config_hash,
    model_name,
)
from l2l_registry.quiet import quiet
from l2l_registry.search.outcome import SearchOutcome
from l2l_registry.search.spec import SearchSpec
from l2l_registry.search.study import RecipeSearch
from l2l_registry.search.tracking import PARENT_RUN_ATTR, EchoObserver, MlflowTrialObserver, record_search
from l2l_registry.store import Store, client, configure

STUDY_DB_NAME = "search.db"


def sqlite_storage(directory: Path | str) -> str:
    """The CLI's default study storage: ``search.db`` in the run's output folder."""
    path = Path(directory).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / STUDY_DB_NAME}"


def default_study_name(
    family_name: str, family_config: Mapping[str, Any], overrides: Mapping[str, Any], spec: SearchSpec
) -> str:
    """The same search asked twice (same family config, overrides and space) is the same study."""
    family = make_family(family_name, family_config).model_dump(mode="json")
    key = canonical_json(
        {"family": family_name, "config": family, "overrides": dict(overrides), "space": spec.space,
         "metric": spec.metric, "seed": spec.seed}
    )
    return f"l2l-{family_name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def search_tag(summary: Mapping[str, Any]) -> str:
    text = canonical_json(dict(summary))
    if len(text) <= MAX_TAG_LENGTH:
        return text
    slim = {k: v for k, v in summary.items() if k not in ("recipe",)}  # the manifest keeps it all
    return clip(canonical_json(slim), MAX_TAG_LENGTH)


class SearchRun:
    """One search and the training of its winner, tracked in one MLflow run (when ``register``)."""

    def __init__(
        self,
        family_name: str,
        family_config: Mapping[str, Any] | None,
        overrides: Mapping[str, Any] | None,
        spec: SearchSpec,
        *,
        storage: str,
        study_name: str,
        register: bool = True,
        store: Store | None = None,
        run_id: str | None = None,
        echo: bool = False,
        should_stop: Callable[[], bool] | None = None,
        callbacks: Sequence[MetaTrainCallback] = (),
    ) -> None:
        """``run_id``: the search's run exists already (a service job's); else one is created,
        or found again in the study when the search resumes."""
        self.family_name = family_name
        self.family_config = dict(family_config or {})
        self.overrides = dict(overrides or {})
        self.spec = spec
        self.register = register
        self.store = store
        self.run_id = run_id
        self.echo = echo
        self.search = RecipeSearch(
            make_family(family_name, self.family_config),
            self.overrides,
            spec,
            storage=storage,
            study_name=study_name,
            should_stop=should_stop,
            callbacks=callbacks,
        )
        self.outcome: SearchOutcome | None = None

    @quiet
    def _parent_run(self, mlflow_client: Any, study: Any) -> str:
        from mlflow.exceptions import MlflowException

        from l2l_registry.tracking import ensure_experiment

        if self.run_id is None and (previous := study.user_attrs.get(PARENT_RUN_ATTR)):
            try:
                run = mlflow_client.get_run(previous)
                if run.info.lifecycle_stage == "active" and run.info.status in ("RUNNING", "SCHEDULED"):
                    self.run_id = previous
            except MlflowException:
                pass  # deleted, or another store: a new run
        if self.run_id is None:
            assert self.store is not None
            experiment_id = ensure_experiment(mlflow_client, self.store, model_name(self.family_name))
            family = self.search.family.model_dump(mode="json")
            run = mlflow_client.create_run(
                experiment_id,
                run_name=f"search-{study.study_name}",
                tags={TAG_FAMILY: self.family_name, TAG_FAMILY_CONFIG_HASH: config_hash(family)},
            )
            self.run_id = run.info.run_id
        else:
            mlflow_client.update_run(self.run_id, status="RUNNING")  # a queued job's run was SCHEDULED
        study.set_user_attr(PARENT_RUN_ATTR, self.run_id)
        return self.run_id

    def run_search(self) -> SearchOutcome:
        """The study (resumed when it exists); trials nested under the search's run."""
        mlflow_client = None
        if self.register:
            self.store = self.store or configure()
            mlflow_client = client(self.store)
            parent = self._parent_run(mlflow_client, self.search.study())
            self.search.observer = MlflowTrialObserver(mlflow_client, parent, self.family_name, echo=self.echo)
        elif self.echo:
            self.search.observer = EchoObserver()
        try:
            self.outcome = self.search.run()
        except BaseException as exc:
            # A stop asked by the caller (a cancelled or lost service job) is the caller's to record:
            # a lost job resumes in the same run.
            if mlflow_client is not None and self.run_id is not None and not isinstance(exc, MetaTrainingCancelled):
                self.end_run(exc)
            raise
        if mlflow_client is not None and self.run_id is not None:
            mlflow_client.set_tag(self.run_id, TAG_SEARCH, search_tag(self.outcome.as_dict()))
        return self.outcome

    @quiet
    def end_run(self, exc: BaseException) -> None:
        """The search failed before its training began: the run ends FAILED (KILLED if cancelled)."""
        assert self.store is not None and self.run_id is not None
        mlflow_client = client(self.store)
        mlflow_client.set_tag(self.run_id, TAG_STOP_REASON, stop_reason_of(exc))
        cancelled = isinstance(exc, KeyboardInterrupt | MetaTrainingCancelled)
        mlflow_client.set_terminated(self.run_id, "KILLED" if cancelled else "FAILED")

    def train_and_publish(
        self, out_dir: Path | str, train: Trainer = meta_train_and_evaluate, on_phase: PhaseHook | None = None
    ) -> tuple[MetaTrainOutcome, Any]:
        """The winner (or the defaults) trained, evaluated, its manifest annotated, published.

        ``train`` and ``on_phase`` as in :func:`l2l_registry.publish.meta_train_and_publish`.
        Returns the outcome and the ``PublishResult`` (None without ``register``).
        """
        from l2l_registry.publish import meta_train_and_publish

        outcome = self.outcome or self.run_search()
        recipe, family = outcome.train_overrides, self.search.family

        def train_recorded(*arguments: Any) -> MetaTrainOutcome:
            """``train``; then the manifest says which recipe won and why."""
            return record_search(train(*arguments), outcome.as_dict())

        if not self.register:
            return train_recorded(self.family_name, family, recipe, out_dir, (), on_phase), None
        run = meta_train_and_publish(
            self.family_name, family, recipe, out_dir,
            store=self.store, run_id=self.run_id, on_phase=on_phase, train=train_recorded,
        )
        return run.outcome, run.version
