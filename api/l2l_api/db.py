"""The job table (SQLAlchemy) and every state transition a job goes through.

The table is the queue: the API inserts ``queued`` rows, a worker claims the oldest one with a
conditional UPDATE, so two workers never take the same job. Each claim increments ``attempt``;
a worker's writes are conditioned on its attempt ("fencing"), so a worker that lost its job (the
service restarted, the job was failed by the supervisor) can no longer change it.
"""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from l2l_registry.redaction import redact

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
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
    state: Mapped[str] = mapped_column(String(16), index=True)
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


@dataclass(frozen=True)
class Job:
    """A detached snapshot of a row (safe to use after its session closed)."""

    id: str
    state: str
    family: str
    family_config: dict[str, Any]
    meta_overrides: dict[str, Any]
    register: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    attempt_started_at: dt.datetime | None
    finished_at: dt.datetime | None
    iterations_done: int
    iterations_total: int
    meta_loss: float | None
    validation_loss: float | None
    best_validation_loss: float | None
    phase: str | None
    phase_done: int | None
    phase_total: int | None
    stop_reason: str | None
    error: str | None
    message: str | None
    attempt: int
    interruptions: int
    worker_slot: int | None
    worker_pid: int | None
    cancel_requested_at: dt.datetime | None
    mlflow_run_id: str | None
    model_name: str | None
    model_version: str | None
    promoted: bool | None
    promotion_reason: str | None
    optimizer_uri: str | None
    run_close_pending: str | None = None
    search: dict[str, Any] | None = None
    search_result: dict[str, Any] | None = None
    ranks: int | None = None

    @classmethod
    def of(cls, row: JobRow) -> Job:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


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


def _clip(text: str | None) -> str | None:
    """Stored text for people: without secrets (l2l_registry.redaction), and not too long."""
    if text is None:
        return None
    text = redact(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


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


class JobStore:
    """All reads and writes of job records. Every method is one short transaction."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        Base.metadata.create_all(self.engine)
        add_missing_columns(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self._session() as session:
            session.execute(select(1))

    # -- the API side ------------------------------------------------------------------------

    def create(
        self,
        job_id: str,
        family: str,
        family_config: dict[str, Any],
        meta_overrides: dict[str, Any],
        register: bool,
        iterations_total: int,
        mlflow_run_id: str | None,
        search: dict[str, Any] | None = None,
        ranks: int = 1,
    ) -> Job:
        now = utcnow()
        row = JobRow(
            id=job_id,
            state=QUEUED,
            family=family,
            family_config=family_config,
            meta_overrides=meta_overrides,
            register=register,
            created_at=now,
            updated_at=now,
            iterations_done=0,
            iterations_total=iterations_total,
            attempt=0,
            interruptions=0,
            mlflow_run_id=mlflow_run_id,
            search=search,
            ranks=ranks,
        )
        with self._session() as session:
            session.add(row)
            session.flush()
            return Job.of(row)

    def get(self, job_id: str) -> Job | None:
        with self._session() as session:
            row = session.get(JobRow, job_id)
            return None if row is None else Job.of(row)

    def list_jobs(
        self, state: str | None = None, family: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)
        if state is not None:
            query = query.where(JobRow.state == state)
        if family is not None:
            query = query.where(JobRow.family == family)
        with self._session() as session:
            return [Job.of(row) for row in session.scalars(query)]

    def count(self, state: str) -> int:
        with self._session() as session:
            return int(
                session.scalar(select(func.count()).select_from(JobRow).where(JobRow.state == state)) or 0
            )

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel a job no worker has taken yet; False when it is no longer queued."""
        now = utcnow()
        with self._session() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == QUEUED)
                .values(
                    state=CANCELLED,
                    finished_at=now,
                    updated_at=now,
                    cancel_requested_at=now,
                    message="cancelled before it started",
                    stop_reason="cancelled",
                )
            )
            return result.rowcount == 1

    def request_cancel(self, job_id: str) -> bool:
        """Ask the worker running the job to stop; False when it is not running."""
        now = utcnow()
        with self._session() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == RUNNING, JobRow.cancel_requested_at.is_(None))
                .values(cancel_requested_at=now, updated_at=now, message="cancellation requested")
            )
            if result.rowcount == 1:
                return True
            row = session.get(JobRow, job_id)
            return row is not None and row.state == RUNNING  # already requested: still pending

    # -- the worker side -----------------------------------------------------------------------

    def claim(self, slot: int, pid: int) -> Job | None:
        """Take the oldest queued job, or None. Safe against other workers claiming concurrently."""
        with self._session() as session:
            candidate = session.scalar(
                select(JobRow.id)
                .where(JobRow.state == QUEUED)
                .order_by(JobRow.created_at, JobRow.id)
                .limit(1)
            )
            if candidate is None:
                return None
            now = utcnow()
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == candidate, JobRow.state == QUEUED)
                .values(
                    state=RUNNING,
                    attempt=JobRow.attempt + 1,
                    worker_slot=slot,
                    worker_pid=pid,
                    started_at=func.coalesce(JobRow.started_at, now),
                    attempt_started_at=now,
                    updated_at=now,
                )
            )
            if result.rowcount != 1:
                return None  # another worker was faster; the caller simply polls again
            row = session.get(JobRow, candidate, populate_existing=True)
            assert row is not None
            return Job.of(row)

    def report_progress(
        self,
        job_id: str,
        attempt: int,
        *,
        iterations_done: int | None = None,
        iterations_total: int | None = None,
        meta_loss: float | None = None,
        validation_loss: float | None = None,
        best_validation_loss: float | None = None,
        message: str | None = None,
        phase: str | None = None,
        phase_done: int | None = None,
        phase_total: int | None = None,
    ) -> tuple[bool, bool]:
        """Write progress; returns (still ours, cancellation requested).

        A new ``phase`` replaces the previous phase's counts (``phase_done``/``phase_total``).
        """
        values: dict[str, Any] = {"updated_at": utcnow()}
        if phase is not None:
            values.update(phase=phase, phase_done=phase_done, phase_total=phase_total)
        if iterations_done is not None:
            values["iterations_done"] = iterations_done
        if iterations_total is not None:
            values["iterations_total"] = iterations_total
        if meta_loss is not None:
            values["meta_loss"] = _finite(meta_loss)
        if validation_loss is not None:
            values["validation_loss"] = _finite(validation_loss)
        if best_validation_loss is not None:
            values["best_validation_loss"] = _finite(best_validation_loss)
        if message is not None:
            values["message"] = _clip(message)
        with self._session() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.attempt == attempt, JobRow.state == RUNNING)
                .values(**values)
            )
            if result.rowcount != 1:
                return False, False
            cancel = session.scalar(select(JobRow.cancel_requested_at).where(JobRow.id == job_id))
            return True, cancel is not None

    def finish(
        self,
        job_id: str,
        attempt: int,
        state: str,
        *,
        error: str | None = None,
        message: str | None = None,
        result: JobResult | None = None,
        stop_reason: str | None = None,
    ) -> bool:
        """Move a running job to a terminal state, if this attempt still owns it."""
        now = utcnow()
        values: dict[str, Any] = {
            "state": state,
            "finished_at": now,
            "updated_at": now,
            "error": _clip(error),
            "stop_reason": stop_reason,
        }
        if message is not None:
            values["message"] = _clip(message)
        if result is not None:
            values.update(
                optimizer_uri=result.optimizer_uri,
                model_name=result.model_name,
                model_version=result.model_version,
                promoted=result.promoted,
                promotion_reason=_clip(result.promotion_reason),
                search_result=result.search,
            )
        with self._session() as session:
            updated = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.attempt == attempt, JobRow.state == RUNNING)
                .values(**values)
            )
            return updated.rowcount == 1

    # -- the supervisor side ---------------------------------------------------------------------

    def running(self) -> list[Job]:
        with self._session() as session:
            return [Job.of(row) for row in session.scalars(select(JobRow).where(JobRow.state == RUNNING))]

    def requeue(self, job_id: str, attempt: int, message: str, interrupted: bool) -> bool:
        """Put a running job back in the queue (it resumes from its checkpoint when taken again)."""
        values: dict[str, Any] = {
            "state": QUEUED,
            "worker_slot": None,
            "worker_pid": None,
            "updated_at": utcnow(),
            "message": _clip(message),
        }
        if interrupted:
            values["interruptions"] = JobRow.interruptions + 1
        with self._session() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.attempt == attempt, JobRow.state == RUNNING)
                .values(**values)
            )
            return result.rowcount == 1

    # -- MLflow runs left open (MLflow was unreachable when their job ended) ----------------------

    def mark_run_close_pending(self, job_id: str, status: str) -> None:
        with self._session() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(run_close_pending=status))

    def runs_to_close(self, limit: int = 20) -> list[Job]:
        with self._session() as session:
            rows = session.scalars(
                select(JobRow).where(JobRow.run_close_pending.is_not(None)).order_by(JobRow.updated_at).limit(limit)
            )
            return [Job.of(row) for row in rows]

    def run_closed(self, job_id: str) -> None:
        with self._session() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(run_close_pending=None))

    # -- the champion lock (l2l_registry.gate.champion_lock), shared by every worker ---------------

    @contextmanager
    def champion_lock(self, model: str) -> Iterator[None]:
        """Held while a worker reads, compares with and moves ``model``'s champion.

        PostgreSQL: a session advisory lock keyed by the model name, so every worker of every
        service process using this job database is serialised; it dies with its session (a
        killed holder frees it). SQLite (one machine): a file lock beside the database file; a
        write transaction would block every progress update for as long as the champion is
        evaluated.
        """
        from l2l_registry.gate import file_lock

        if self.engine.dialect.name == "postgresql":
            # AUTOCOMMIT: the session holds the lock, no transaction. A session idle in a
            # transaction for the minutes an evaluation takes is ended by servers that set
            # idle_in_transaction_session_timeout, which freed the lock under its holder.
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("SELECT pg_advisory_lock(hashtextextended(:name, 0))"), {"name": model})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock_all()"))
            return
        database = self.engine.url.database
        folder = Path(database).parent if database and database != ":memory:" else Path(tempfile.gettempdir())
        with file_lock(folder / "locks" / f"{model}.champion.lock"):
            yield
