"""POST /meta-train, GET /jobs, GET /jobs/{id}, DELETE /jobs/{id}."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Response, status

from l2l_api.db import JobState, JobStore
from l2l_api.deps import job_service, store
from l2l_api.jobs import JobService
from l2l_api.schemas import JOB_ID_PATTERN, NAME_PATTERN, ErrorOut, JobList, JobOut, MetaTrainRequest
from l2l_api.security import require_token
from l2l_api.service_errors import JobNotFound

router = APIRouter(tags=["jobs"])

_AUTH = {401: {"model": ErrorOut, "description": "A token is configured and the request does not carry it."}}
JobId = Path(pattern=JOB_ID_PATTERN, description="The id POST /meta-train returned.")


@router.post(
    "/meta-train",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(require_token)],
    responses={
        **_AUTH,
        404: {"model": ErrorOut, "description": "Unknown family; `available` lists the installed ones."},
        409: {"model": ErrorOut, "description": "The family's plugin is installed but fails to load."},
        413: {"description": "Request body over L2L_API_MAX_BODY_BYTES."},
        422: {"description": "Invalid family config, meta-training overrides, or over the service's limits."},
        429: {"model": ErrorOut, "description": "The queue is full (Retry-After says when to try again)."},
        503: {"model": ErrorOut, "description": "MLflow is unreachable; nothing was queued."},
    },
    summary="Queue a meta-training job",
)
def meta_train(
    request: MetaTrainRequest, response: Response, jobs: JobService = Depends(job_service)
) -> JobOut:
    """Validates the configs against the family's own schema and the service's limits and
    queues the job: a worker process runs it. Poll GET /jobs/{id}. `mlflow_run_id` may be null
    for a moment: the job's MLflow run is created right after the answer."""
    job = jobs.submit(request)
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobOut.of(job)


@router.get("/jobs", response_model=JobList, summary="Jobs, newest first")
def list_jobs(
    state: JobState | None = None,
    family: str | None = Query(None, pattern=NAME_PATTERN),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000),
    jobs: JobStore = Depends(store),
) -> JobList:
    return JobList(
        jobs=[JobOut.of(job) for job in jobs.list_jobs(state, family, limit, offset)],
        limit=limit,
        offset=offset,
    )


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"model": ErrorOut}}, summary="One job")
def get_job(job_id: str = JobId, jobs: JobStore = Depends(store)) -> JobOut:
    job = jobs.get(job_id)
    if job is None:
        raise JobNotFound(job_id)
    return JobOut.of(job)


@router.delete(
    "/jobs/{job_id}",
    response_model=JobOut,
    dependencies=[Depends(require_token)],
    responses={
        **_AUTH,
        202: {"model": JobOut, "description": "Running: the worker stops at its next meta-iteration."},
        404: {"model": ErrorOut},
        409: {"model": ErrorOut, "description": "The job already finished."},
    },
    summary="Cancel a job",
)
def cancel_job(response: Response, job_id: str = JobId, jobs: JobService = Depends(job_service)) -> JobOut:
    """200 with state `cancelled` for a queued job; 202 with `cancel_requested` for a running one."""
    job, done = jobs.cancel(job_id)
    if not done:
        response.status_code = status.HTTP_202_ACCEPTED
    return JobOut.of(job)
