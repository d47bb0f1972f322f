"""The service log's line for a job that has ended: state, duration, stop reason, version, promotion."""

from __future__ import annotations

import logging

from l2l_api.db import Job, JobStore


def job_end_line(job: Job) -> str:
    if job.started_at is not None and job.finished_at is not None:
        duration = f"{(job.finished_at - job.started_at).total_seconds():.1f} s"
    else:
        duration = "never started"
    version = f"{job.model_name}/{job.model_version}" if job.model_version else (job.optimizer_uri or "none")
    promoted = "-" if job.promoted is None else ("yes" if job.promoted else "no")
    line = (
        f"job {job.id} {job.state}: family {job.family}, duration {duration}, attempt {job.attempt}, "
        f"stop reason {job.stop_reason or 'unknown'}, "
        f"meta-iterations {job.iterations_done}/{job.iterations_total}, phase {job.phase or '-'}, "
        f"version {version}, promoted {promoted}"
    )
    if job.error:
        line += f", error: {job.error}"
    return line


def log_job_end(logger: logging.Logger, store: JobStore, job_id: str) -> None:
    """One INFO line (WARNING for a failed job) with the job's final record."""
    job = store.get(job_id)
    if job is None:
        return
    logger.log(logging.WARNING if job.state == "failed" else logging.INFO, job_end_line(job))
