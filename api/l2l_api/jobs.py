"""Job operations behind the endpoints: submit (validated by l2l_api.job_requests, then queued),
cancel, and what happens to running jobs when the service stops and starts again.

Restart semantics: a job found ``running`` at start-up was interrupted by the service dying (a
clean shutdown puts its jobs back in the queue itself). It is queued again, and the worker that
takes it resumes from the job's checkpoint (``<jobs_dir>/<id>/checkpoint``, written every
``checkpoint_every`` meta-iterations), or starts over when none was written yet. After
``max_resumes`` interruptions it is marked failed with the reason instead, so a job that
brings the service down cannot do it forever. Nothing is ever left ``running`` across a start.

Submitting answers once the job's row is committed, its MLflow run left to the worker that
starts it, while MLflow is known to work (:mod:`l2l_api.run_creation`). At start-up and after an
MLflow failure the request creates the run itself until one creation succeeds, so a client asking
while MLflow is down gets a 503 and nothing is queued, as before.

Errors are :mod:`l2l_api.service_errors` (and the library's family errors); l2l_api.errors maps
them to HTTP.
"""

from __future__ import annotations

import logging
import threading
import uuid

from l2l_api import registry_adapter
from l2l_api.db import Job, JobState, JobStore
from l2l_api.disk import disk_free_mb
from l2l_api.job_requests import ValidatedRequest, validate_request
from l2l_api.joblog import log_job_end
from l2l_api.run_creation import RunPlacement
from l2l_api.runs import close_run
from l2l_api.schemas import MetaTrainRequest
from l2l_api.service_errors import DiskNearlyFull, JobAlreadyFinished, JobNotFound, MlflowUnavailable, QueueFull
from l2l_api.settings import Settings
from l2l_plugin.pipeline import CHECKPOINT_DIR, STOP_CANCELLED
from l2l_plugin.training.checkpoint import CHECKPOINT_NAME

logger = logging.getLogger("l2l_api.jobs")

STOP_INTERRUPTED_TOO_OFTEN = "interrupted too often"
RETRY_AFTER_SECONDS = 30  # MLflow down, or the queue full
RETRY_AFTER_DISK_SECONDS = 300


class JobService:
    def __init__(self, settings: Settings, store: JobStore, runs: RunPlacement | None = None) -> None:
        self.settings = settings
        self.store = store
        self.runs = runs or RunPlacement()
        # One API process serves requests: a lock makes "count the queue, then reserve" atomic.
        self._submit_lock = threading.Lock()
        self._reserved = 0  # submissions past the queue check whose row is not written yet

    def submit(self, request: MetaTrainRequest) -> Job:
        valid = validate_request(request, self.settings)
        if (free := disk_free_mb(self.settings.data_dir)) is not None and free < self.settings.min_free_disk_mb:
            raise DiskNearlyFull(
                f"the service's data directory is nearly full ({free:.0f} MB free, "
                f"L2L_API_MIN_FREE_DISK_MB={self.settings.min_free_disk_mb:g}); the job was not queued",
                RETRY_AFTER_DISK_SECONDS,
            )
        job_id = uuid.uuid4().hex
        # A place in the queue is reserved under the lock, and the MLflow run and the row are
        # created outside it: concurrent POSTs do not wait for each other's writes.
        with self._submit_lock:
            queued = self.store.count(JobState.QUEUED) + self._reserved
            if queued >= self.settings.max_queued:
                raise QueueFull(
                    f"the queue is full ({queued} jobs waiting, limit {self.settings.max_queued}); retry later",
                    RETRY_AFTER_SECONDS,
                )
            self._reserved += 1
        try:
            run_id = None if self.runs.by_worker else self._create_run(job_id, valid)
            return self._insert(job_id, valid, run_id)
        finally:
            with self._submit_lock:
                self._reserved -= 1

    def _create_run(self, job_id: str, valid: ValidatedRequest) -> str:
        """The job's MLflow run, on the request path (MLflow's state unknown or failing)."""
        try:
            run_id = registry_adapter.bounded(
                self.settings.mlflow_request_timeout_seconds,
                registry_adapter.create_queued_run,
                job_id,
                valid.family,
                valid.family_config,
            )
        except registry_adapter.MlflowTimeout as exc:
            raise MlflowUnavailable(f"{exc}; the job was not queued", RETRY_AFTER_SECONDS) from None
        except Exception as exc:  # noqa: BLE001 - the tracking server is down or misconfigured
            logger.exception("creating the MLflow run of job %s failed", job_id)
            raise MlflowUnavailable(
                f"MLflow is unavailable, the job was not queued: {type(exc).__name__}", RETRY_AFTER_SECONDS
            ) from None
        self.runs.mlflow_answered()
        return run_id

    def _insert(self, job_id: str, valid: ValidatedRequest, run_id: str | None) -> Job:
        try:
            return self.store.create(
                job_id,
                valid.family,
                valid.family_config,
                valid.meta_overrides,
                valid.register,
                valid.iterations,
                run_id,
                search=valid.search,
                ranks=valid.ranks,
            )
        except Exception:
            if run_id is not None:
                registry_adapter.end_run(run_id, "FAILED")
            raise

    def cancel(self, job_id: str) -> tuple[Job, bool]:
        """Returns the job and whether it is already cancelled (False: the worker will stop it)."""
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if self.store.cancel_queued(job_id):
            cancelled = self._get(job_id)  # a queued job's run, if its request created one
            self._end_run(cancelled, "KILLED", STOP_CANCELLED)
            log_job_end(logger, self.store, job_id)
            return cancelled, True
        if self.store.request_cancel(job_id):
            return self._get(job_id), False
        job = self._get(job_id)
        if job.state == JobState.CANCELLED:
            return job, True
        raise JobAlreadyFinished(
            f"job {job_id} has already {job.state}; only queued or running jobs can be cancelled"
        )

    def _end_run(self, job: Job, status: str, stop_reason: str) -> None:
        """Bounded: an unreachable MLflow leaves it to the supervisor (l2l_api.runs)."""
        close_run(
            self.store, job.id, job.mlflow_run_id, status, stop_reason, self.settings.mlflow_request_timeout_seconds
        )

    def _get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        assert job is not None
        return job

    # -- stopping and starting ---------------------------------------------------------------------

    def has_checkpoint(self, job: Job) -> bool:
        return (self.settings.jobs_dir / job.id / CHECKPOINT_DIR / CHECKPOINT_NAME).is_file()

    def _finish_cancelled_at_shutdown(self, job: Job) -> None:
        if self.store.finish(
            job.id,
            job.attempt,
            JobState.CANCELLED,
            message="cancelled (the service stopped first)",
            stop_reason=STOP_CANCELLED,
        ):
            self._end_run(job, "KILLED", STOP_CANCELLED)
            log_job_end(logger, self.store, job.id)

    def recover_interrupted(self) -> list[Job]:
        """At start-up, before any worker runs: resume or fail every job left ``running``."""
        recovered = []
        for job in self.store.running():
            if job.cancel_requested_at is not None:
                self._finish_cancelled_at_shutdown(job)
                recovered.append(self._get(job.id))
                continue
            where = (
                "will resume from its last checkpoint"
                if self.has_checkpoint(job)
                else "no checkpoint was written yet, so it starts over"
            )
            if job.interruptions < self.settings.max_resumes:
                self.store.requeue(
                    job.id, job.attempt, f"the service stopped during attempt {job.attempt}; {where}", True
                )
            elif self.store.finish(
                job.id,
                job.attempt,
                JobState.FAILED,
                error="the service stopped while this job was running "
                f"(interruption {job.interruptions + 1}; L2L_API_MAX_RESUMES={self.settings.max_resumes}): "
                "not resumed again",
                stop_reason=STOP_INTERRUPTED_TOO_OFTEN,
            ):
                self._end_run(job, "FAILED", STOP_INTERRUPTED_TOO_OFTEN)
                log_job_end(logger, self.store, job.id)
            recovered.append(self._get(job.id))
            logger.warning("job %s was running when the service stopped: now %s", job.id, recovered[-1].state)
        return recovered

    def requeue_after_shutdown(self) -> None:
        """A clean shutdown stopped the workers: their jobs go back to the queue, nothing counted."""
        for job in self.store.running():
            if job.cancel_requested_at is not None:
                self._finish_cancelled_at_shutdown(job)
            else:
                self.store.requeue(
                    job.id,
                    job.attempt,
                    "the service was shut down; the job resumes when it starts again",
                    False,
                )


