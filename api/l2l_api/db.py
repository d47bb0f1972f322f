"""Every state transition a job goes through (the table itself: l2l_api.job_table).

The table is the queue: the API inserts ``queued`` rows, a worker claims the oldest one with a
conditional UPDATE, so two workers never take the same job. Each claim increments ``attempt``;
a worker's writes are conditioned on its attempt ("fencing"), so a worker that lost its job (the
service restarted, the job was failed by the supervisor) can no longer change it.

A job may be queued before its MLflow run exists: the worker that claims it creates the run
(l2l_api.run_creation) and attaches it with :meth:`JobStore.attach_run`.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from l2l_api.job_table import (
    ADDED_COLUMNS,
    MAX_TEXT,
    TERMINAL,
    Base,
    Job,
    JobResult,
    JobRow,
    JobState,
    add_missing_columns,
    make_engine,
    utcnow,
)
from l2l_plugin.text import clip
from l2l_registry.redaction import redact

__all__ = [
    "ADDED_COLUMNS",
    "TERMINAL",
    "Job",
    "JobResult",
    "JobRow",
    "JobState",
    "JobStore",
    "add_missing_columns",
    "make_engine",
    "utcnow",
]


def _clip(text: str | None) -> str | None:
    """Stored text for people: without secrets (l2l_registry.redaction), and not too long."""
    return None if text is None else clip(redact(text), MAX_TEXT)


def _owned_update(session: Session, job_id: str, attempt: int, values: dict[str, Any]) -> bool:
    """The fence of every worker-side write: it lands only while ``attempt`` still owns the
    running job (a worker that lost its job, or a later attempt's, changes nothing)."""
    result = session.execute(
        update(JobRow)
        .where(JobRow.id == job_id, JobRow.attempt == attempt, JobRow.state == JobState.RUNNING)
        .values(**values)
    )
    return result.rowcount == 1


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None



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
        """A queued job; ``mlflow_run_id`` None: the worker that claims it creates its run."""
        now = utcnow()
        row = JobRow(
            id=job_id,
            state=JobState.QUEUED,
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
            return row

    def get(self, job_id: str) -> Job | None:
        with self._session() as session:
            return session.get(JobRow, job_id)

    def list_jobs(
        self, state: JobState | None = None, family: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        query = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id).limit(limit).offset(offset)
        if state is not None:
            query = query.where(JobRow.state == state)
        if family is not None:
            query = query.where(JobRow.family == family)
        with self._session() as session:
            return list(session.scalars(query))

    def count(self, state: JobState) -> int:
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
                .where(JobRow.id == job_id, JobRow.state == JobState.QUEUED)
                .values(
                    state=JobState.CANCELLED,
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
                .where(JobRow.id == job_id, JobRow.state == JobState.RUNNING, JobRow.cancel_requested_at.is_(None))
                .values(cancel_requested_at=now, updated_at=now, message="cancellation requested")
            )
            if result.rowcount == 1:
                return True
            row = session.get(JobRow, job_id)
            return row is not None and row.state == JobState.RUNNING  # already requested: still pending

    # -- the worker side -----------------------------------------------------------------------

    def claim(self, slot: int, pid: int) -> Job | None:
        """Take the oldest queued job, or None. Safe against other workers claiming concurrently."""
        with self._session() as session:
            candidate = session.scalar(
                select(JobRow.id)
                .where(JobRow.state == JobState.QUEUED)
                .order_by(JobRow.created_at, JobRow.id)
                .limit(1)
            )
            if candidate is None:
                return None
            now = utcnow()
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == candidate, JobRow.state == JobState.QUEUED)
                .values(
                    state=JobState.RUNNING,
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
            return row

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
            if not _owned_update(session, job_id, attempt, values):
                return False, False
            cancel = session.scalar(select(JobRow.cancel_requested_at).where(JobRow.id == job_id))
            return True, cancel is not None

    def finish(
        self,
        job_id: str,
        attempt: int,
        state: JobState,
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
            return _owned_update(session, job_id, attempt, values)

    # -- the supervisor side ---------------------------------------------------------------------

    def running(self) -> list[Job]:
        with self._session() as session:
            return list(session.scalars(select(JobRow).where(JobRow.state == JobState.RUNNING)))

    def requeue(self, job_id: str, attempt: int, message: str, interrupted: bool) -> bool:
        """Put a running job back in the queue (it resumes from its checkpoint when taken again)."""
        values: dict[str, Any] = {
            "state": JobState.QUEUED,
            "worker_slot": None,
            "worker_pid": None,
            "updated_at": utcnow(),
            "message": _clip(message),
        }
        if interrupted:
            values["interruptions"] = JobRow.interruptions + 1
        with self._session() as session:
            return _owned_update(session, job_id, attempt, values)

    # -- MLflow runs: created after the job is queued, closed after it ended ------------------------

    def attach_run(self, job_id: str, run_id: str) -> Job | None:
        """Record the job's MLflow run unless it has one; returns the job (None: it had one already)."""
        with self._session() as session:
            result = session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.mlflow_run_id.is_(None))
                .values(mlflow_run_id=run_id, updated_at=utcnow())
            )
            return session.get(JobRow, job_id, populate_existing=True) if result.rowcount == 1 else None

    def mark_run_close_pending(self, job_id: str, status: str) -> None:
        with self._session() as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(run_close_pending=status))

    def runs_to_close(self, limit: int = 20) -> list[Job]:
        with self._session() as session:
            rows = session.scalars(
                select(JobRow).where(JobRow.run_close_pending.is_not(None)).order_by(JobRow.updated_at).limit(limit)
            )
            return list(rows)

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
