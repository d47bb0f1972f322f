"""Request and response bodies (they are the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from l2l_api.db import Job, JobState
from l2l_registry.search.spec import SearchSpec

# Family names are entry-point names; model versions and aliases follow MLflow's rules. The
# patterns keep request strings out of MLflow filter expressions and file names.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"


class ErrorOut(BaseModel):
    detail: str | list[dict[str, Any]] = Field(
        description="What went wrong (a list of field errors for 422)."
    )
    available: list[str] | None = Field(None, description="For an unknown name: the names that exist.")


# -- families ---------------------------------------------------------------------------------


class FamilyOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str
    distribution: str | None = Field(description="The installed distribution that registers it.")
    target: str = Field(description="module:object of the entry point.")
    json_schema: dict[str, Any] | None = Field(
        alias="schema",
        description="JSON Schema of the family's config (null when the plugin failed to load).",
    )
    defaults: dict[str, Any] | None = Field(description="The config used when a field is left out.")
    meta_train_defaults: dict[str, Any] = Field(
        description="The family's own MetaTrainConfig overrides, applied beneath a request's meta_overrides."
    )
    error: str | None = Field(description="Why the plugin could not be loaded, or null.")


# -- meta-training jobs -----------------------------------------------------------------------


class MetaTrainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={
            "examples": [
                {
                    "family": "quadratic",
                    "family_config": {"dim": 4},
                    "meta_overrides": {"meta_iterations": 6, "horizon": 10, "unroll_length": 5},
                    "register": True,
                }
            ]
        },
    )

    family: str = Field(pattern=NAME_PATTERN, description="A family name from GET /families.")
    family_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Fields of the family's config (its JSON Schema); omitted ones default.",
    )
    meta_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="MetaTrainConfig fields, nested for network/evaluation (see l2l_plugin.training); "
        "bounded by the service's limits. max_seconds defaults to the service's budget.",
    )
    # "register" would shadow BaseModel.register (abc); the JSON name stays "register".
    # Strict: 0, 1 and "yes" are not booleans here (a client meaning false must say false).
    should_register: StrictBool = Field(
        True,
        alias="register",
        description="Publish the result as a version of l2l-<family> (promoted to @champion if it wins).",
    )
    ranks: int = Field(
        1,
        ge=1,
        description="torch.distributed ranks the job meta-trains and evaluates on (README 'Scaling out'); "
        "meta_batch_size is per rank. At most L2L_API_MAX_RANKS (default: the machine's cores).",
    )
    search: SearchSpec | None = Field(
        None,
        description="Search the meta-training recipe first (Optuna; README 'Searching a recipe'): trials "
        "of a few minutes each, pruned on their validation losses, then the best recipe (or the defaults, "
        "when nothing beat them) trained with meta_overrides' budget and published.",
    )


STOP_REASON_DESCRIPTION = (
    "Why the job ended: 'completed' (every meta-iteration), 'time budget' (max_seconds ended "
    "meta-training early; the job still evaluates and publishes), 'cancelled', 'diverged' "
    "(non-finite meta-losses), 'failed' (an error), 'job time limit', 'worker died', "
    "'interrupted too often'; null while it runs."
)


class JobProgress(BaseModel):
    phase: str | None = Field(
        description="What the worker is doing: 'meta-training', 'evaluating', 'publishing' (null while "
        "queued); once the job has ended, the phase it ended in."
    )
    phase_done: int | None = Field(
        description="Progress in the phase: meta-iterations while meta-training, optimizers evaluated "
        "(the learned one, then each tuned baseline) while evaluating; null while publishing."
    )
    phase_total: int | None = Field(description="What phase_done counts up to.")
    iterations_done: int
    iterations_total: int
    meta_loss: float | None = Field(
        description="Latest meta-loss (null before the first or when non-finite)."
    )
    validation_loss: float | None
    best_validation_loss: float | None


class JobResult(BaseModel):
    registered: bool
    optimizer_uri: str = Field(description="What load_optimizer() takes: models:/... or runs:/.../optimizer.")
    model_name: str | None = None
    model_version: str | None = None
    promoted: bool | None = Field(None, description="Whether the version became @champion.")
    promotion_reason: str | None = None
    stop_reason: str | None = Field(None, description=STOP_REASON_DESCRIPTION)
    search: dict[str, Any] | None = Field(
        None,
        description="For a recipe search: trials and their states, whether a searched recipe beat the "
        "defaults ('improved'; false: 'nothing better than the defaults', which were trained), the "
        "winning recipe and a message saying so.",
    )


class JobOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    state: JobState
    family: str
    family_config: dict[str, Any] = Field(description="The family config, every field resolved.")
    meta_overrides: dict[str, Any] = Field(description="The overrides the job runs with (incl. the budget).")
    should_register: bool = Field(alias="register", description="Whether the result is published.")
    ranks: int = Field(1, description="torch.distributed ranks the job runs on.")
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    progress: JobProgress
    error: str | None = Field(description="Why the job failed.")
    message: str | None = Field(
        description="The latest note on the job (the phase after meta-training, resumed, cancellation...)."
    )
    stop_reason: str | None = Field(description=STOP_REASON_DESCRIPTION)
    attempt: int = Field(description="How many times a worker has started it (more than 1 after a resume).")
    cancel_requested: bool
    mlflow_run_id: str | None
    search: dict[str, Any] | None = Field(None, description="The recipe search the job runs first, or null.")
    result: JobResult | None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        result = None
        if job.optimizer_uri is not None:
            result = JobResult(
                registered=job.model_version is not None,
                optimizer_uri=job.optimizer_uri,
                model_name=job.model_name,
                model_version=job.model_version,
                promoted=job.promoted,
                promotion_reason=job.promotion_reason,
                stop_reason=job.stop_reason,
                search=job.search_result,
            )
        if job.phase == "meta-training":
            phase_done, phase_total = job.iterations_done, job.iterations_total
        else:
            phase_done, phase_total = job.phase_done, job.phase_total
        return cls(
            id=job.id,
            state=job.state,
            family=job.family,
            family_config=job.family_config,
            meta_overrides=job.meta_overrides,
            should_register=job.register,
            ranks=job.ranks or 1,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            progress=JobProgress(
                phase=job.phase,
                phase_done=phase_done,
                phase_total=phase_total,
                iterations_done=job.iterations_done,
                iterations_total=job.iterations_total,
                meta_loss=job.meta_loss,
                validation_loss=job.validation_loss,
                best_validation_loss=job.best_validation_loss,
            ),
            error=job.error,
            message=job.message,
            stop_reason=job.stop_reason,
            attempt=job.attempt,
            cancel_requested=job.cancel_requested_at is not None,
            mlflow_run_id=job.mlflow_run_id,
            search=job.search,
            result=result,
        )


class JobList(BaseModel):
    jobs: list[JobOut]
    limit: int
    offset: int


# -- registered optimizers ----------------------------------------------------------------------


class VersionOut(BaseModel):
    family: str
    version: str
    uri: str = Field(description="models:/l2l-<family>/<version>")
    run_id: str | None
    created_ms: int
    champion: bool
    aliases: list[str]
    promotion: str | None = Field(description="champion, not promoted, or forced.")
    promotion_reason: str | None
    tags: dict[str, str]
    metrics: dict[str, float | None] = Field(description="The run's final evaluation (eval.*).")
    cost_profile: dict[str, Any] | None = Field(
        None,
        description="Step time at a model size (default 10⁶ parameters) beside torch.optim.Adam, state "
        "bytes per parameter, threads and machine, measured where the optimizer was made; null for "
        "versions made before cost profiles.",
    )


class OptimizerFamilyOut(BaseModel):
    family: str
    model_name: str
    versions: int
    champion_version: str | None


class OptimizerVersionsOut(BaseModel):
    family: str
    model_name: str
    champion: str | None = Field(description="The version behind @champion, or null.")
    champion_uri: str | None
    versions: list[VersionOut]


class OptimizerDetailOut(VersionOut):
    requested: str = Field(description="The version or alias asked for.")
    load_uri: str = Field(description="The models:/ URI a pipeline passes to load_optimizer().")
    load_example: str
    files_url: str = Field(description="Where to download the optimizer's files as a zip.")
    manifest: dict[str, Any] = Field(
        description="optimizer.json: architecture, family, training, provenance."
    )


# -- health -------------------------------------------------------------------------------------


class MlflowHealth(BaseModel):
    reachable: bool
    store: str | None
    error: str | None


class WorkerHealth(BaseModel):
    slot: int
    pid: int | None
    alive: bool
    job_id: str | None


class WorkersHealth(BaseModel):
    configured: int
    alive: int
    processes: list[WorkerHealth]


class QueueHealth(BaseModel):
    queued: int
    running: int
    limit: int


class DiskHealth(BaseModel):
    free_mb: float | None
    min_free_mb: float


class HealthOut(BaseModel):
    status: str = Field(
        description="ok, or degraded when MLflow, a worker or the disk is not (the API itself is up)."
    )
    version: str
    problems: list[str] = Field(description="Why it is degraded, in words without details (empty when ok).")
    # The details name paths, stores and process ids: only for a caller with the token (or when
    # no token is configured).
    mlflow: MlflowHealth | None = Field(None, description="Only with the token.")
    workers: WorkersHealth | None = Field(None, description="Only with the token.")
    jobs: QueueHealth | None = Field(None, description="Only with the token.")
    disk: DiskHealth | None = Field(None, description="Only with the token.")
