"""GET /health: liveness, with MLflow reachability, the workers' and the disk's state.

Always 200 while the process is up. Details (the MLflow store, worker PIDs, queue counts, free
space) go only to a caller with the token, or to everyone when no token is configured; the
``problems`` list says what is wrong in words that reveal nothing. MLflow is pinged at most
every :data:`MLFLOW_PING_TTL_SECONDS` (one ping in flight at a time), so probes and load tests
do not become load on the tracking server.
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials

from l2l_api import __version__, registry_adapter
from l2l_api.db import JobState, JobStore
from l2l_api.deps import pool, run_placement, settings, store
from l2l_api.disk import disk_free_mb
from l2l_api.run_creation import RunPlacement
from l2l_api.schemas import DiskHealth, HealthOut, MlflowHealth, QueueHealth, WorkerHealth, WorkersHealth
from l2l_api.security import bearer, presents_token
from l2l_api.settings import Settings
from l2l_api.supervisor import WorkerPool
from l2l_registry.redaction import redact

router = APIRouter(tags=["health"])

MLFLOW_PING_SECONDS = 5.0  # a remote tracking server that does not answer by then is "unreachable"
MLFLOW_PING_TTL_SECONDS = 2.0


class MlflowProbe:
    """The latest MLflow ping, shared by concurrent /health requests."""

    def __init__(self) -> None:
        self._result: MlflowHealth | None = None
        self._at = 0.0
        self._inflight: asyncio.Future[str] | None = None

    async def health(self) -> MlflowHealth:
        now = time.monotonic()
        if self._result is not None and now - self._at < MLFLOW_PING_TTL_SECONDS:
            return self._result
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(asyncio.to_thread(registry_adapter.ping))
        try:
            described = await asyncio.wait_for(asyncio.shield(self._inflight), MLFLOW_PING_SECONDS)
            result = MlflowHealth(reachable=True, store=redact(described), error=None)
        except TimeoutError:
            result = MlflowHealth(reachable=False, store=None, error=f"no answer within {MLFLOW_PING_SECONDS:g} s")
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the API itself is alive
            result = MlflowHealth(reachable=False, store=None, error=redact(f"{type(exc).__name__}: {exc}")[:300])
        self._result, self._at = result, time.monotonic()
        return result


def _probe(request: Request) -> MlflowProbe:
    state = request.app.state
    if getattr(state, "mlflow_probe", None) is None:
        state.mlflow_probe = MlflowProbe()
    return state.mlflow_probe


@router.get("/health", response_model=HealthOut, summary="Liveness and what is degraded")
async def health(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    config: Settings = Depends(settings),
    jobs: JobStore = Depends(store),
    workers: WorkerPool = Depends(pool),
    runs: RunPlacement = Depends(run_placement),
) -> HealthOut:
    mlflow = await _probe(request).health()
    if not mlflow.reachable:
        runs.mlflow_failed()  # POSTs create their runs themselves (503) until MLflow answers
    processes = [WorkerHealth(**status) for status in await asyncio.to_thread(workers.status)]  # type: ignore[arg-type]
    alive = sum(process.alive for process in processes)
    free = disk_free_mb(config.data_dir)
    problems = []
    if not mlflow.reachable:
        problems.append("MLflow is unreachable")
    if alive < config.workers:
        problems.append(f"{config.workers - alive} of {config.workers} workers are down")
    if free is not None and free < config.min_free_disk_mb:
        problems.append("the data directory is nearly full")
    out = HealthOut(status="degraded" if problems else "ok", version=__version__, problems=problems)
    if not presents_token(request, credentials):
        return out
    queued, running = await asyncio.to_thread(lambda: (jobs.count(JobState.QUEUED), jobs.count(JobState.RUNNING)))
    out.mlflow = mlflow
    out.workers = WorkersHealth(configured=config.workers, alive=alive, processes=processes)
    out.jobs = QueueHealth(queued=queued, running=running, limit=config.max_queued)
    out.disk = DiskHealth(free_mb=None if free is None else round(free, 1), min_free_mb=config.min_free_disk_mb)
    return out
