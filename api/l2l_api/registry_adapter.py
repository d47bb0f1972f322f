"""What the service needs from l2l_registry around its jobs, bounded in time where a request waits.

- A job's MLflow run is created when the job is queued (so POST /meta-train can answer with its
  id, and a resumed job keeps logging to the same run: ``meta_train_and_publish(..., run_id=...)``,
  which also logs an unregistered job's files, loadable as ``runs:/<run_id>/optimizer``).
- Closing, reading and checking runs from outside their worker.
- The optimizer files of a model version, for GET /optimizers/.../files.

mlflow is imported inside the functions, like l2l_registry does, to keep imports cheap.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from l2l_plugin.artifacts import MANIFEST_NAME, WEIGHTS_NAME
from l2l_plugin.errors import L2LError
from l2l_registry import model_name
from l2l_registry.conventions import TAG_FAMILY, TAG_FAMILY_CONFIG_HASH, config_hash, version_uri
from l2l_registry.quiet import quiet
from l2l_registry.store import client, configure
from l2l_registry.tracking import ensure_experiment

TAG_JOB_ID = "l2l.api_job_id"

# MLflow calls made while answering a request run here, so the request can give up on one that
# hangs (a server that accepts connections but does not answer) without the event loop or
# FastAPI's request threads waiting for it. Bounded: when MLflow hangs, requests fail fast
# instead of piling up threads.
_EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="l2l-mlflow")

T = TypeVar("T")


class MlflowTimeout(L2LError, TimeoutError):
    """An MLflow call did not answer within the request's time bound."""


# The embedded store is a local SQLite file: a slow call there is contention on a busy machine
# (or its first opening), not an outage, and failing it would refuse work for nothing.
EMBEDDED_STORE_TIMEOUT_SECONDS = 60.0


def bounded(timeout: float, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in the MLflow thread pool; :class:`MlflowTimeout` after ``timeout`` s
    (at least :data:`EMBEDDED_STORE_TIMEOUT_SECONDS` on the embedded store)."""
    from l2l_registry.store import resolve_store

    if resolve_store().embedded:
        timeout = max(timeout, EMBEDDED_STORE_TIMEOUT_SECONDS)
    future = _EXECUTOR.submit(fn, *args, **kwargs)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()  # still queued behind hung calls: never run it
        raise MlflowTimeout(f"MLflow did not answer within {timeout:g} s") from None


_experiment_ids: dict[tuple[str, str], str] = {}


def _experiment_id(mlflow_client: Any, store: Any, name: str) -> str:
    """The family's experiment, looked up once per store (a query less on every POST)."""
    key = (store.tracking_uri, name)
    if key not in _experiment_ids:
        _experiment_ids[key] = ensure_experiment(mlflow_client, store, name)
    return _experiment_ids[key]


def use_wal_for_embedded_store() -> None:
    """The embedded MLflow store (SQLite) in WAL mode with synchronous=NORMAL, as the job store.

    MLflow opens SQLite in rollback-journal mode with a full sync on every commit: creating a
    job's run (two commits) took about 100 ms on a busy 2-core machine, most of POST
    /meta-train, and a writer blocks every reader. WAL lets the API read while a worker writes
    and commits without a sync (durable across a crash of the service; the last transactions
    can be lost only with the machine's power). The mode is kept in the file, so `l2l` commands
    opening the store later use it too. A store on a network file system must not use WAL:
    point MLFLOW_TRACKING_URI at an mlflow server instead.
    """
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if getattr(use_wal_for_embedded_store, "installed", False):
        return

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        if not isinstance(dbapi_connection, sqlite3.Connection):
            return
        from l2l_registry.store import DB_NAME

        cursor = dbapi_connection.cursor()
        try:
            files = [row[2] for row in cursor.execute("PRAGMA database_list")]
            if any(str(name).endswith("/" + DB_NAME) for name in files):
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    event.listen(Engine, "connect", pragmas)
    use_wal_for_embedded_store.installed = True  # type: ignore[attr-defined]


@quiet
def create_queued_run(job_id: str, family: str, family_config: Mapping[str, Any]) -> str:
    """An MLflow run in the family's experiment, status SCHEDULED until a worker opens it."""
    store = configure()
    mlflow_client = client(store)
    experiment_id = _experiment_id(mlflow_client, store, model_name(family))
    run = mlflow_client.create_run(
        experiment_id,
        run_name=f"api-{job_id[:8]}",
        tags={
            TAG_FAMILY: family,
            TAG_FAMILY_CONFIG_HASH: config_hash(dict(family_config)),
            TAG_JOB_ID: job_id,
        },
    )
    mlflow_client.update_run(run.info.run_id, status="SCHEDULED")
    return str(run.info.run_id)


@quiet
def end_run(run_id: str | None, status: str, stop_reason: str | None = None) -> None:
    """Close a job's run from outside its worker (cancelled while queued, worker killed, gave up)."""
    if run_id:
        from l2l_registry.conventions import TAG_STOP_REASON

        mlflow_client = client(configure())
        if stop_reason is not None:
            mlflow_client.set_tag(run_id, TAG_STOP_REASON, stop_reason)
        mlflow_client.set_terminated(run_id, status)


@quiet
def run_status(run_id: str | None) -> str | None:
    """The MLflow status of a job's run (RUNNING, FINISHED, FAILED, ...)."""
    return str(client(configure()).get_run(run_id).info.status) if run_id else None


@quiet
def registered_version(run_id: str) -> str | None:
    """The model version a run was already published as (a job resumed after publishing)."""
    from l2l_registry.conventions import TAG_REGISTERED_VERSION

    return client(configure()).get_run(run_id).data.tags.get(TAG_REGISTERED_VERSION)


@quiet
def stop_reason_of_run(run_id: str) -> str | None:
    """The ``l2l.stop_reason`` tag of a job's run."""
    from l2l_registry.conventions import TAG_STOP_REASON

    return client(configure()).get_run(run_id).data.tags.get(TAG_STOP_REASON)


@quiet
def optimizer_files(family: str, version: str) -> dict[str, bytes]:
    """The optimizer's own files (``optimizer.json``, ``weights.safetensors``) of a model version."""
    from mlflow.artifacts import download_artifacts

    from l2l_registry.loading import find_optimizer_dir

    store = configure()
    with tempfile.TemporaryDirectory(prefix="l2l-api-files-") as tmp:
        local = download_artifacts(
            artifact_uri=version_uri(family, version),
            dst_path=tmp,
            tracking_uri=store.tracking_uri,
            registry_uri=store.registry_uri,
        )
        directory = find_optimizer_dir(Path(local))
        return {name: (directory / name).read_bytes() for name in (MANIFEST_NAME, WEIGHTS_NAME)}


def manifest_of(files: Mapping[str, bytes]) -> dict[str, Any]:
    return json.loads(files[MANIFEST_NAME])


def zip_files(files: Mapping[str, bytes]) -> bytes:
    """A zip with the files at its root: unzip into a folder and ``load_optimizer(folder, ...)``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@quiet
def run_metrics(run_id: str | None) -> dict[str, float]:
    if not run_id:
        return {}
    from mlflow.exceptions import MlflowException

    try:
        return dict(client(configure()).get_run(run_id).data.metrics)
    except MlflowException:  # the run was deleted; the version still stands
        return {}


@quiet
def ping() -> str:
    """Raise if the tracking store cannot be reached; return its description."""
    store = configure()
    client(store).search_experiments(max_results=1)
    return store.describe()


@quiet
def describe_store() -> str:
    return configure().describe()
