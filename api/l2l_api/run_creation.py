"""Where a queued job's MLflow run is created: by the worker that starts the job, off the
request path, while MLflow is known to work.

Creating a run is two MLflow writes (the run, then its SCHEDULED status): most of what POST
/meta-train cost, and on the embedded store they wait for the running job's own writes (and,
made by a thread of the API process, they would still hold its interpreter lock while requests
wait). So POST answers once the job's row is committed, ``mlflow_run_id`` null, and the worker
that claims the job creates the run first (:func:`ensure_run`); a job cancelled while queued
never had one to end.

The request leaves the run to the worker only while MLflow is known to work
(:class:`RunPlacement`): after a run was created by a request, and before any MLflow failure the
API process has seen since (a request's MLflow call, a /health ping). At start-up and after a
failure the request creates the run itself, so an outage is answered with 503 and nothing
queued, as before. A worker that cannot create the run fails the job with the reason
(``MLflow is unreachable (...)``), like a job whose MLflow goes down while it runs.
"""

from __future__ import annotations

from l2l_api import registry_adapter
from l2l_api.db import Job, JobStore


class RunPlacement:
    """Whether a request may leave its job's MLflow run to the worker (see the module)."""

    def __init__(self) -> None:
        self._mlflow_works = False

    @property
    def by_worker(self) -> bool:
        return self._mlflow_works

    def mlflow_answered(self) -> None:
        """A request created a run: later jobs can get theirs from their worker."""
        self._mlflow_works = True

    def mlflow_failed(self) -> None:
        """An MLflow call failed: requests create runs themselves (503 while it is down)."""
        self._mlflow_works = False


def ensure_run(store: JobStore, job: Job) -> Job:
    """``job`` (just claimed) with its MLflow run, created now when its request left it to the worker.

    Raises what MLflow raises when it cannot: the job fails with it.
    """
    if job.mlflow_run_id is not None:
        return job
    run_id = registry_adapter.create_queued_run(job.id, job.family, job.family_config)
    attached = store.attach_run(job.id, run_id)
    if attached is None:  # only one worker holds a claimed job: someone else wrote a run id
        registry_adapter.end_run(run_id, "KILLED")
        attached = store.get(job.id)
        assert attached is not None and attached.mlflow_run_id is not None
    return attached
