"""The job table: its columns, the states a job goes through, and the engine that opens it.

:mod:`l2l_api.db` holds the transitions (JobStore); this module only says what a row is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
MAX_TEXT = 4000  # errors and messages are cut: they are for people, the details are in the logs


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out (SQLite forgets the zone; PostgreSQL keeps it)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class JobRow(Base):
    __tablename__ = "l2l_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # Stored as the plain value (VARCHAR(16), as before the enum), read back as a JobState.
    state: Mapped[JobState] = mapped_column(
        Enum(JobState, native_enum=False, length=16, values_callable=lambda states: [s.value for s in states]),
        index=True,
    )
    family: Mapped[str] = mapped_column(String(200))
    family_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta_overrides: Mapped[dict[str, Any]] = mapped_column(JSON)
    register: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempt_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # the time limit's clock
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)

    iterations_done: Mapped[int] = mapped_column(Integer, default=0)
    iterations_total: Mapped[int] = mapped_column(Integer)
    meta_loss: Mapped[float | None] = mapped_column(Float)
    validation_loss: Mapped[float | None] = mapped_column(Float)
    best_validation_loss: Mapped[float | None] = mapped_column(Float)
    # What a worker is doing: meta-training, evaluating (optimizers done / total), publishing;
    # kept once the job has ended (the phase it ended in).
    phase: Mapped[str | None] = mapped_column(String(32))
    phase_done: Mapped[int | None] = mapped_column(Integer)
    phase_total: Mapped[int | None] = mapped_column(Integer)
    stop_reason: Mapped[str | None] = mapped_column(String(32))  # why it ended (see pipeline.STOP_*)

    error: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    interruptions: Mapped[int] = mapped_column(Integer, default=0)
    worker_slot: Mapped[int | None] = mapped_column(Integer)
    worker_pid: Mapped[int | None] = mapped_column(Integer)
    cancel_requested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(300))
    model_version: Mapped[str | None] = mapped_column(String(32))
    promoted: Mapped[bool | None] = mapped_column(Boolean)
    promotion_reason: Mapped[str | None] = mapped_column(Text)
    optimizer_uri: Mapped[str | None] = mapped_column(String(500))
    # The MLflow run status (FAILED, KILLED) still to be set because MLflow was unreachable when
    # the job ended; the supervisor retries until it is set (then null).
    run_close_pending: Mapped[str | None] = mapped_column(String(16))
    # A recipe search (l2l_api.search): what the request asked, and the search's summary at the end.
    search: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    search_result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    ranks: Mapped[int | None] = mapped_column(Integer)  # torch.distributed ranks (null: 1)


# What JobStore hands out: rows detached from their session (expire_on_commit=False), every
# column loaded. They are snapshots to read; writes go through JobStore's methods only.
Job = JobRow


@dataclass(frozen=True)
class JobResult:
    optimizer_uri: str
    model_name: str | None = None
    model_version: str | None = None
    promoted: bool | None = None
    promotion_reason: str | None = None
    search: dict[str, Any] | None = None  # a recipe search's summary (whether it beat the defaults)


# Columns added after the first release: a job store created before them gets them at start-up
# (each nullable, so old rows read as "unknown").
ADDED_COLUMNS = (
    "phase", "phase_done", "phase_total", "stop_reason", "run_close_pending", "search", "search_result", "ranks",
)


def add_missing_columns(engine: Engine) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for every ADDED_COLUMNS column the table lacks; returns them."""
    def existing() -> set[str]:
        return {column["name"] for column in inspect(engine).get_columns(JobRow.__tablename__)}

    added = []
    for name in ADDED_COLUMNS:
        if name in existing():
            continue
        kind = JobRow.__table__.columns[name].type.compile(dialect=engine.dialect)
        try:
            with engine.begin() as connection:
                connection.execute(text(f"ALTER TABLE {JobRow.__tablename__} ADD COLUMN {name} {kind}"))
        except Exception:
            if name not in existing():  # not another process adding it at the same moment
                raise
            continue
        added.append(name)
    return added


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker writes progress; the busy timeout makes concurrent
    # writers (API, workers, supervisor) wait for each other instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)
