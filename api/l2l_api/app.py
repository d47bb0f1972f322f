"""The FastAPI application and its lifespan: open the job store and MLflow, recover the jobs a
dead service left running, start the worker pool; on shutdown, stop the workers and queue their
jobs again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from l2l_api import __version__
from l2l_api.db import JobStore
from l2l_api.errors import install_error_handlers
from l2l_api.jobs import JobService
from l2l_api.openapi import install_family_schemas
from l2l_api.routes import families, health, jobs, optimizers
from l2l_api.run_creation import RunPlacement
from l2l_api.security import describe_exposure
from l2l_api.settings import Settings, prepare_environment
from l2l_api.supervisor import WorkerPool
from l2l_registry.redaction import install_log_redaction

logger = logging.getLogger("l2l_api")

DESCRIPTION = """Learned LSTM optimizers (Andrychowicz et al. 2016) as a service: list the installed
task families, queue meta-training jobs that run in worker processes and publish to the MLflow
registry, and fetch registered optimizers (or their files) for training pipelines.

When `L2L_API_TOKEN` is set, POST and DELETE need `Authorization: Bearer <token>`."""


def _open_mlflow() -> str:
    """Create the embedded store's tables now, not on the first request (it takes seconds)."""
    from l2l_api import registry_adapter

    return registry_adapter.ping()


def _embedded_store() -> bool:
    from l2l_registry.store import resolve_store

    return resolve_store().embedded


def _open_mlflow_logged() -> None:
    try:
        logger.info("MLflow: %s", _open_mlflow())
    except Exception as exc:  # noqa: BLE001 - the service runs anyway; /health reports it
        logger.error("MLflow is unreachable at start-up: %s: %s", type(exc).__name__, exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    prepare_environment(settings)
    store = JobStore(settings.job_database_url)
    runs = RunPlacement()
    service = JobService(settings, store, runs)
    pool = WorkerPool(settings, store)
    app.state.store, app.state.jobs, app.state.pool, app.state.runs = store, service, pool, runs
    if warning := describe_exposure(settings.host, settings.token_value()):
        logger.warning(warning)
    # A tracking server is opened in the background: an unreachable one must not keep the service
    # from listening (its retries take minutes); /health reports it meanwhile. The embedded store
    # is a local file that cannot hang on a network: it is opened (its tables created, seconds)
    # before the first request, as the first request would otherwise wait for it.
    opening = asyncio.ensure_future(asyncio.to_thread(_open_mlflow_logged))
    if await asyncio.to_thread(_embedded_store):
        await opening
    # Before any worker starts: nothing may still look "running" from a previous life.
    await asyncio.to_thread(service.recover_interrupted)
    pool.start()
    try:
        yield
    finally:
        opening.cancel()
        await asyncio.to_thread(pool.stop)
        await asyncio.to_thread(service.requeue_after_shutdown)
        store.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application (uvicorn's factory: ``uvicorn --factory l2l_api.app:create_app``)."""
    settings = settings or Settings()
    install_log_redaction()
    app = FastAPI(
        title="l2l-plugin service",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for module in (health, families, jobs, optimizers):
        app.include_router(module.router)
    install_family_schemas(app)
    return app
