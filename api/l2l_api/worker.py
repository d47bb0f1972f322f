"""A worker process: claims queued jobs from the job store, one at a time, and runs them.

Long-lived, so torch and mlflow are imported once per worker rather than once per job. It exits
as soon as the service that started it is gone (parent-death signal on Linux, and a parent
check between meta-iterations elsewhere), so a killed service never leaves a job running twice.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from l2l_api.db import Job, JobResult, JobState, JobStore
from l2l_api.disk import disk_free_mb
from l2l_api.failures import DISK_FULL_MB, DiskFull, describe_error, is_disk_full
from l2l_api.job_progress import JobLost, JobProgressReporter
from l2l_api.joblog import log_job_end
from l2l_plugin.pipeline import (
    STOP_CANCELLED,
    MetaTrainOutcome,
    stop_reason_of,
)
from l2l_plugin.training import MetaTrainingCancelled

logger = logging.getLogger("l2l_api.worker")

CAUSE_BYTES = 2048  # the shared buffer a dying worker writes its fatal error into


def run_job(job: Job, store: JobStore, jobs_dir: Path, parent_pid: int) -> None:
    """Run one claimed job to a terminal state (unless the job stopped being ours)."""
    from l2l_api import registry_adapter
    from l2l_api.run_creation import ensure_run
    from l2l_plugin.pipeline import meta_train_and_evaluate
    from l2l_plugin.training.distributed.spawn import local_ranks, meta_train_arguments
    from l2l_registry import meta_train_and_publish

    reporter = JobProgressReporter(store, job, parent_pid)
    out_dir = jobs_dir / job.id
    finished = False
    try:
        job = ensure_run(store, job)  # the job's MLflow run, when its request left it to the worker
        assert job.mlflow_run_id is not None
        if job.register and (version := registry_adapter.registered_version(job.mlflow_run_id)):
            # A previous attempt published the version and the service died before recording it.
            finished = store.finish(
                job.id,
                job.attempt,
                JobState.SUCCEEDED,
                message="published by an earlier attempt",
                result=_registered_result(job.family, version, None, None),
                stop_reason=registry_adapter.stop_reason_of_run(job.mlflow_run_id),
            )
            return
        overrides, search = job.meta_overrides, None
        if job.search:
            search = _search(job, store, reporter)
            overrides = search.train_overrides  # the winner's recipe (or the defaults), its warm start reused

        def train(*arguments: Any) -> MetaTrainOutcome:
            """``meta_train_and_evaluate``, the manifest annotated with the search, then a last check."""
            # With ranks > 1 this process is rank 0 (its callbacks decide progress and cancellation
            # for every rank) and the others are `l2l meta-train` children, gone when this ends.
            with local_ranks(job.ranks or 1, meta_train_arguments(job.family, job.family_config, overrides, out_dir)):
                outcome = meta_train_and_evaluate(*arguments)
            if search is not None:
                from l2l_registry.search.tracking import record_search

                record_search(outcome, search.as_dict())  # the manifest says which recipe and why
            reporter.check()
            return outcome

        run = meta_train_and_publish(
            job.family, job.family_config, overrides, out_dir,
            register=job.register, run_id=job.mlflow_run_id,
            callbacks=[reporter], on_phase=reporter.on_phase, train=train,
        )
        if run.version is not None:
            result = _registered_result(job.family, run.version.version, run.version.promoted, run.version.reason)
        else:
            result = JobResult(optimizer_uri=run.optimizer_uri)
        if search is not None:
            result = dataclasses.replace(result, search=search.as_dict())
        finished = store.finish(
            job.id, job.attempt, JobState.SUCCEEDED, message="done", result=result, stop_reason=run.outcome.stop_reason
        )
    except JobLost as exc:
        logger.warning("job %s: stopped, %s", job.id, exc)
    except MetaTrainingCancelled as exc:
        if reporter.lost:
            logger.warning("job %s: stopped, the job is no longer this worker's", job.id)
            return
        finished = store.finish(
            job.id, job.attempt, JobState.CANCELLED, message=f"cancelled: {exc}", stop_reason=STOP_CANCELLED
        )
    except Exception as exc:  # noqa: BLE001 - any failure is the job's, recorded without a traceback
        free = disk_free_mb(jobs_dir)
        if is_disk_full(exc) or (free is not None and free < DISK_FULL_MB):
            # Not the job's fault, and nothing can be recorded now: the worker dies with the cause
            # (shared memory), and the supervisor resumes the job from its checkpoint later.
            # Checked on the disk too: torch reports a failed write as "unexpected pos".
            full = DiskFull(
                errno.ENOSPC, f"the disk of {jobs_dir} is full ({free or 0:.1f} MB free): {describe_error(exc)}"
            )
            logger.error("job %s: %s; this worker stops", job.id, full)
            raise full from exc
        logger.exception("job %s failed", job.id)
        finished = store.finish(
            job.id, job.attempt, JobState.FAILED, error=describe_error(exc), stop_reason=stop_reason_of(exc)
        )
        if finished:
            _close_failed_run(store, job, stop_reason_of(exc))
    finally:
        if finished:
            log_job_end(logger, store, job.id)


def _search(job: Job, store: JobStore, reporter: JobProgressReporter) -> Any:
    """The job's recipe search (its study resumes on a resumed job); a cancel ends the run KILLED."""
    from l2l_api import registry_adapter
    from l2l_api.search import run_job_search

    try:
        return run_job_search(
            job.id,
            job.family,
            job.family_config,
            job.meta_overrides,
            job.search or {},
            job.mlflow_run_id,
            store.engine.url.render_as_string(hide_password=False),
            reporter,
            reporter.on_phase,
        )
    except JobLost:
        raise  # the job resumes elsewhere, its run and study with it
    except MetaTrainingCancelled:
        if not reporter.lost and not reporter.parent_gone():
            registry_adapter.end_run(job.mlflow_run_id, "KILLED", STOP_CANCELLED)
        raise


def _close_failed_run(store: JobStore, job: Job, stop_reason: str) -> None:
    """The run ends FAILED; when MLflow was what failed, the supervisor sets it later."""
    from l2l_api import registry_adapter
    from l2l_api.runs import close_run

    try:
        status = registry_adapter.run_status(job.mlflow_run_id)
    except Exception:  # noqa: BLE001 - unreachable: close_run records it as pending
        status = "RUNNING"
    if status in ("RUNNING", "SCHEDULED"):
        close_run(store, job.id, job.mlflow_run_id, "FAILED", stop_reason)


def _registered_result(family: str, version: str, promoted: bool | None, reason: str | None) -> JobResult:
    from l2l_registry import model_name, version_uri

    name = model_name(family)
    return JobResult(
        optimizer_uri=version_uri(family, version),
        model_name=name,
        model_version=version,
        promoted=promoted,
        promotion_reason=reason,
    )


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the thread that spawned it (the supervisor) ends."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: the parent check between iterations remains
        pass


def _write_cause(cause: Any, exc: BaseException) -> None:
    """The fatal error into the supervisor's shared buffer (no disk, no database: they may be full)."""
    if cause is None:
        return
    text = describe_error(exc)
    if exc.__context__ is not None and not isinstance(exc, KeyboardInterrupt | DiskFull):
        text = f"{describe_error(exc.__context__)}; then recording it failed: {text}"
    data = text.encode("utf-8", "replace")[: CAUSE_BYTES - 1]
    cause[: len(data)] = data
    cause[len(data)] = b"\0"


def worker_main(
    slot: int, database_url: str, jobs_dir: str, parent_pid: int, poll_seconds: float, cause: Any = None
) -> None:
    """Entry point of a worker process (multiprocessing, spawn start method)."""
    _die_with_parent()
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        return
    from l2l_registry.redaction import install_log_redaction

    install_log_redaction()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        from l2l_api.registry_adapter import use_wal_for_embedded_store

        use_wal_for_embedded_store()  # synchronous=NORMAL is per connection (WAL is in the file)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s worker-{slot} %(levelname)s %(message)s")
    try:
        _serve_jobs(slot, database_url, jobs_dir, parent_pid, poll_seconds)
    except BaseException as exc:
        _write_cause(cause, exc)
        raise


def _serve_jobs(slot: int, database_url: str, jobs_dir: str, parent_pid: int, poll_seconds: float) -> None:
    import torch

    torch.set_num_threads(1)  # MetaTrainConfig.cpu_threads sets it per job; keep idle imports light too
    store = JobStore(database_url)
    from l2l_registry.gate import set_champion_lock

    set_champion_lock(store.champion_lock)  # every worker of this job database shares it
    directory = Path(jobs_dir)
    pid = os.getpid()
    while os.getppid() == parent_pid:
        job = store.claim(slot, pid)
        if job is None:
            time.sleep(poll_seconds)
            continue
        logger.info("job %s: attempt %d on %s", job.id, job.attempt, job.family)
        run_job(job, store, directory, parent_pid)
