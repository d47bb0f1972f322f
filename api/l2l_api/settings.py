"""The service's configuration: environment variables ``L2L_API_*`` (``l2l serve`` flags set them).

One data directory holds everything the service keeps on disk, so a container needs one volume:

    <data_dir>/mlflow/        the embedded MLflow store (unless MLFLOW_TRACKING_URI names a server)
    <data_dir>/api/jobs.db    the job records (unless L2L_API_DATABASE_URL names another database)
    <data_dir>/api/jobs/<id>/ each job's working directory: checkpoint, optimizer files, evaluation
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "L2L_API_"
MLFLOW_DIR_ENV = "L2L_MLFLOW_DIR"  # l2l_registry.DATA_DIR_ENV; repeated so settings need no mlflow import


def default_data_dir() -> Path:
    # The parent of l2l_registry's default store, so `l2l optimizers` on the same machine sees
    # what the service registered without any configuration.
    from l2l_plugin.paths import user_data_dir

    return user_data_dir()


class Settings(BaseSettings):
    """Every knob of the service; each field is also the environment variable L2L_API_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    # -- where and how it runs ---------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface uvicorn listens on (0.0.0.0 in the container).")
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(
        1,
        ge=0,
        le=64,
        description="Meta-training worker processes (one job each at a time). 1 suits a CPU machine; "
        "0 accepts and stores jobs without running them.",
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the job store; default: SQLite in <data_dir>/api/jobs.db."
    )

    # -- security ------------------------------------------------------------------------------
    token: SecretStr | None = Field(
        None, description="When set, POST/DELETE need `Authorization: Bearer <token>`."
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Larger request bodies get 413.")
    server_only_family_fields: tuple[str, ...] = Field(
        ("data_dir",),
        description="Family config fields a request may not set (422), as a JSON list. data_dir names a "
        "folder on the server (mnist_mlp, mnist_conv): a client must not point a worker at server paths.",
    )

    # -- the queue and the workers ---------------------------------------------------------------
    max_queued: int = Field(16, ge=1, description="Queued (not yet running) jobs; beyond it POST gets 429.")
    job_timeout_seconds: float = Field(
        3 * 3600.0,
        gt=0,
        description="An attempt running longer (training + evaluation + publishing) is stopped; a resumed "
        "job gets the time again.",
    )
    cancel_grace_seconds: float = Field(
        30.0, gt=0, description="A cancelled job that has not stopped by then has its worker killed."
    )
    max_resumes: int = Field(
        2, ge=0, description="Service restarts a running job survives (resumed from its checkpoint)."
    )
    poll_seconds: float = Field(0.5, gt=0, le=10, description="How often an idle worker looks for a job.")
    worker_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="Added to the workers' nice value: meta-training is batch work, and on a busy CPU "
        "the HTTP process answering requests goes first (0: same priority as the service).",
    )
    min_free_disk_mb: float = Field(
        200.0,
        ge=0,
        description="Below this much free space in the data directory POST answers 503 and /health "
        "says degraded (a full disk kills workers mid-checkpoint).",
    )

    # -- MLflow calls (bounded, so an unreachable server costs seconds, not minutes) ------------
    mlflow_request_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="An MLflow call made while answering a request that takes longer gets 503 with "
        "Retry-After (the call itself is left to finish in the background).",
    )
    mlflow_http_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Per HTTP request to an mlflow server (MLFLOW_HTTP_REQUEST_TIMEOUT, unless set).",
    )
    mlflow_http_retries: int = Field(
        2,
        ge=0,
        description="Retries of a failed HTTP request to an mlflow server, 1 s apart and doubling "
        "(MLFLOW_HTTP_REQUEST_MAX_RETRIES, unless set); mlflow's own default retries for minutes.",
    )

    # -- the cost of one request (a body asking for more gets 422) -----------------------------
    max_meta_iterations: int = Field(20_000, ge=1)
    max_horizon: int = Field(1_000, ge=1)
    max_meta_batch_size: int = Field(256, ge=1)
    max_validation_tasks: int = Field(1_000, ge=1)
    max_test_tasks: int = Field(1_000, ge=1)
    max_tuning_tasks: int = Field(100, ge=1)
    max_evaluation_steps: int = Field(10_000, ge=1)
    max_cpu_threads: int = Field(4, ge=1)
    max_ranks: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Cap on a job's ranks (data-parallel meta-training processes); default: the machine's cores.",
    )
    max_train_seconds: float = Field(
        3600.0,
        gt=0,
        description="Cap on meta_overrides.max_seconds; a request that sets none gets this budget.",
    )
    max_search_trials: int = Field(50, ge=1, description="Cap on search.trials of a recipe search.")
    max_search_seconds: float = Field(
        3600.0, gt=0, description="Cap on search.budget (the trials' wall-clock; the winner's training comes after)."
    )
    search_storage_url: str | None = Field(
        None,
        description="Optuna RDB storage (SQLAlchemy URL) of recipe-search studies; default: search.db beside "
        "a SQLite job store, else the job database itself.",
    )
    max_task_memory_mb: float = Field(
        2048.0,
        gt=0,
        description="Cap on the memory the family declares per task (TaskFamily.cost) times the most "
        "tasks held at once (meta-batch, validation, test tasks).",
    )
    max_evaluation_work: float = Field(
        1e14,
        gt=0,
        description="Cap on the evaluation's arithmetic: the family's declared work per step (plus the "
        "LSTM's per coordinate) × steps × test and tuning runs.",
    )
    max_lr_grid_points: int = Field(64, ge=1, description="Cap on the baselines' learning-rate grid size.")
    lr_range: tuple[float, float] = Field(
        (1e-10, 1e6),
        description="Learning rates a request's evaluation grid may span (finite, as a JSON list).",
    )

    @property
    def api_dir(self) -> Path:
        return self.data_dir / "api"

    @property
    def jobs_dir(self) -> Path:
        return self.api_dir / "jobs"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def job_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.api_dir / 'jobs.db'}"

    def token_value(self) -> str | None:
        return (
            self.token.get_secret_value()
            if self.token is not None and self.token.get_secret_value()
            else None
        )


def prepare_environment(settings: Settings) -> None:
    """Point the registry at <data_dir>/mlflow unless the operator chose a store.

    Set in ``os.environ`` (not only in mlflow's process state) because worker processes are
    spawned from this one and must open the same store.
    """
    settings.api_dir.mkdir(parents=True, exist_ok=True)
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("MLFLOW_TRACKING_URI") and not os.environ.get(MLFLOW_DIR_ENV):
        os.environ[MLFLOW_DIR_ENV] = str(settings.mlflow_dir)
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        from l2l_api.registry_adapter import use_wal_for_embedded_store

        use_wal_for_embedded_store()
    # Bounded MLflow HTTP calls here and in the workers (spawned: they inherit the environment).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", f"{settings.mlflow_http_timeout_seconds:g}")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    # Download progress bars are for terminals; in a service log they are noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if settings.search_storage_url:  # the workers open the recipe searches' studies there
        os.environ[f"{ENV_PREFIX}SEARCH_STORAGE_URL"] = settings.search_storage_url
