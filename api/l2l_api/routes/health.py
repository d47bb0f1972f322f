"""GET /health: liveness, with MLflow reachability and the workers' state."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from l2l_api import __version__, registry_adapter
from l2l_api.db import QUEUED, RUNNING, JobStore
from l2l_api.deps import pool, settings, store
from l2l_api.schemas import HealthOut, MlflowHealth, QueueHealth, WorkerHealth, WorkersHealth
from l2l_api.settings import Settings
from l2l_api.supervisor import WorkerPool

router = APIRouter(tags=["health"])

MLFLOW_PING_SECONDS = 5.0  # a remote tracking server that does not answer by then is "unreachable"


async def _mlflow_health() -> MlflowHealth:
    try:
        described = await asyncio.wait_for(asyncio.to_thread(registry_adapter.ping), MLFLOW_PING_SECONDS)
    except TimeoutError:
        return MlflowHealth(reachable=False, store=None, error=f"no answer within {MLFLOW_PING_SECONDS:g} s")
    except Exception as exc:  # noqa: BLE001 - reported, not raised: the API itself is alive
        return MlflowHealth(reachable=False, store=None, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    return MlflowHealth(reachable=True, store=described, error=None)


@router.get("/health", response_model=HealthOut, summary="Liveness, MLflow reachability, workers")
async def health(
    config: Settings = Depends(settings),
    jobs: JobStore = Depends(store),
    workers: WorkerPool = Depends(pool),
) -> HealthOut:
    mlflow = await _mlflow_health()
    processes = [WorkerHealth(**status) for status in await asyncio.to_thread(workers.status)]  # type: ignore[arg-type]
    queued, running = await asyncio.to_thread(lambda: (jobs.count(QUEUED), jobs.count(RUNNING)))
    alive = sum(process.alive for process in processes)
    degraded = not mlflow.reachable or alive < config.workers
    return HealthOut(
        status="degraded" if degraded else "ok",
        version=__version__,
        mlflow=mlflow,
        workers=WorkersHealth(configured=config.workers, alive=alive, processes=processes),
        jobs=QueueHealth(queued=queued, running=running, limit=config.max_queued),
    )
