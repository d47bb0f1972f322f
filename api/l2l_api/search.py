"""Recipe searches in the service (``"search": {...}`` in POST /meta-train).

- Validation at submission: the search's own fields, the service's limits on trials and budget,
  and the space narrowed by the family's hints and the request (422 with field errors).
- Where studies live: ``L2L_API_SEARCH_STORAGE_URL`` (PostgreSQL in compose), else ``search.db``
  beside a SQLite job store, else the job database itself; every worker shares the studies.
- A job's search: one study per job (``l2l-job-<id>``), trials nested under the job's MLflow
  run; a resumed job continues its study where it stopped.

optuna is imported only when a search runs (``l2l_registry.search`` loads it lazily).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from l2l_api.settings import ENV_PREFIX, Settings
from l2l_plugin.families import TaskFamily
from l2l_plugin.pipeline import PhaseHook
from l2l_plugin.training import MetaTrainCallback, MetaTrainConfig
from l2l_registry.search.spec import SearchSpec

SEARCH_DB_NAME = "search.db"
SEARCH_LOC = ("body", "search")


def search_storage_url(database_url: str) -> str:
    """The Optuna storage of a service whose job store is ``database_url`` (unless the operator
    named one: ``L2L_API_SEARCH_STORAGE_URL``, exported to the workers by prepare_environment)."""
    from sqlalchemy.engine import make_url

    if explicit := os.environ.get(f"{ENV_PREFIX}SEARCH_STORAGE_URL"):
        return explicit
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            return url.set(database=str(Path(url.database).with_name(SEARCH_DB_NAME))).render_as_string(
                hide_password=False
            )
        raise ValueError("a recipe search needs a job store on disk (an in-memory SQLite store has no studies)")
    return url.render_as_string(hide_password=False)


def study_name(job_id: str) -> str:
    return f"l2l-job-{job_id}"


def _error(path: Sequence[str | int], kind: str, message: str, value: Any, limit: float | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "loc": [*SEARCH_LOC, *path], "msg": message, "input": value}
    if limit is not None:
        error["ctx"] = {"limit": limit}
    return error


def search_errors(
    spec: SearchSpec, family_class: type[TaskFamily], config: MetaTrainConfig, overrides: Mapping[str, Any], settings: Settings
) -> list[dict[str, Any]]:
    """422 errors of a request's search: the service's limits, then the space's narrowing."""
    from l2l_registry.search.space import SearchSpace, SearchSpaceError

    prefix = settings.model_config["env_prefix"]
    errors = []
    if spec.trials > settings.max_search_trials:
        errors.append(
            _error(["trials"], "limit_exceeded", f"{spec.trials} exceeds this service's limit of "
                   f"{settings.max_search_trials} (set by {prefix}MAX_SEARCH_TRIALS)", spec.trials, settings.max_search_trials)
        )
    if spec.budget > settings.max_search_seconds:
        errors.append(
            _error(["budget"], "limit_exceeded", f"{spec.budget:g} exceeds this service's limit of "
                   f"{settings.max_search_seconds:g} (set by {prefix}MAX_SEARCH_SECONDS)", spec.budget, settings.max_search_seconds)
        )
    train_seconds = config.max_seconds if config.max_seconds is not None else settings.max_train_seconds
    if spec.budget + train_seconds > settings.job_timeout_seconds:
        errors.append(
            _error(["budget"], "limit_exceeded", f"the search ({spec.budget:g} s) and the winner's training "
                   f"({train_seconds:g} s) exceed the job time limit of {settings.job_timeout_seconds:g} s "
                   f"(set by {prefix}JOB_TIMEOUT_SECONDS)", spec.budget, settings.job_timeout_seconds - train_seconds)
        )
    hints = dict(family_class.meta_train_search_hints)
    try:
        SearchSpace.build(config.longest_horizon, [hints], pinned=overrides)
    except SearchSpaceError as exc:  # the family's own hints are broken: not the request's fault
        errors.append(_error(["space"], "family_hints", f"the family's meta_train_search_hints: {exc}", hints))
        return errors
    try:
        SearchSpace.build(config.longest_horizon, [hints, spec.space], pinned=overrides)
    except SearchSpaceError as exc:
        location = ["space", exc.knob] if exc.knob is not None else ["space"]
        errors.append(_error(location, "value_error", str(exc), spec.space.get(exc.knob) if exc.knob else spec.space))
    return errors


def effective_search(spec: SearchSpec, settings: Settings) -> dict[str, Any]:
    """The search a job runs: the request's, its meta-batch choices kept within the service's limit."""
    from l2l_registry.search.space import declared_knobs

    space = dict(spec.space)
    if "meta_batch_size" not in space:
        knob = next(k for k in declared_knobs(1) if k.name == "meta_batch_size")
        allowed = [c for c in knob.choices if isinstance(c, int) and c <= settings.max_meta_batch_size]
        if len(allowed) < len(knob.choices):
            space["meta_batch_size"] = {"choices": allowed}
    return spec.model_copy(update={"space": space}).model_dump(mode="json")


def run_job_search(
    job_id: str,
    family: str,
    family_config: Mapping[str, Any],
    meta_overrides: Mapping[str, Any],
    search: Mapping[str, Any],
    run_id: str | None,
    database_url: str,
    reporter: MetaTrainCallback,
    on_phase: PhaseHook,
) -> Any:
    """The job's study (resumed if it exists); returns the ``SearchOutcome``."""
    from l2l_registry.search.run import SearchRun

    search_run = SearchRun(
        family,
        family_config,
        meta_overrides,
        SearchSpec.model_validate(dict(search)),
        storage=search_storage_url(database_url),
        study_name=study_name(job_id),
        run_id=run_id,
        should_stop=reporter.should_stop,
        callbacks=[reporter],
    )
    search_run.search.on_phase = on_phase
    return search_run.run_search()
