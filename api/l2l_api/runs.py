"""Ending a job's MLflow run, even when MLflow is down at the moment the job ends.

The job record is authoritative and is written first; the run's status follows. When the
tracking server cannot be reached, the status still to set is kept in the job row
(``run_close_pending``) and the supervisor sets it once MLflow answers again, so no run of a
finished job stays RUNNING for ever.
"""

from __future__ import annotations

import logging

from l2l_api import registry_adapter
from l2l_api.db import JobStore
from l2l_registry.redaction import redact

logger = logging.getLogger("l2l_api.runs")


def close_run(
    store: JobStore,
    job_id: str,
    run_id: str | None,
    status: str,
    stop_reason: str | None = None,
    timeout: float | None = None,
) -> bool:
    """End the run (``timeout``: give up waiting after that long); False: left for the supervisor."""
    if not run_id:
        return True
    try:
        if timeout is None:
            registry_adapter.end_run(run_id, status, stop_reason)
        else:
            registry_adapter.bounded(timeout, registry_adapter.end_run, run_id, status, stop_reason)
        return True
    except Exception as exc:  # noqa: BLE001 - MLflow down: retried later, the job record stands
        logger.warning(
            "could not set MLflow run %s of job %s to %s (%s); retried when MLflow answers",
            run_id,
            job_id,
            status,
            redact(f"{type(exc).__name__}: {exc}")[:300],
        )
        try:
            store.mark_run_close_pending(job_id, status)
        except Exception:  # noqa: BLE001 - the database too: the run stays open, logged above
            logger.exception("could not record the pending close of run %s", run_id)
        return False


def close_pending_runs(store: JobStore, timeout: float) -> int:
    """Retry the runs left open; returns how many were closed."""
    closed = 0
    for job in store.runs_to_close():
        assert job.run_close_pending is not None
        try:
            registry_adapter.bounded(
                timeout, registry_adapter.end_run, job.mlflow_run_id, job.run_close_pending, job.stop_reason
            )
        except Exception:  # noqa: BLE001 - still down: the next round tries again
            return closed
        store.run_closed(job.id)
        closed += 1
        logger.info("MLflow run %s of job %s set to %s", job.mlflow_run_id, job.id, job.run_close_pending)
    return closed
