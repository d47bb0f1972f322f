"""Optuna's RDB storage for a study, made safe for several processes on SQLite."""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

# A trial whose process stopped beating for GRACE_SECONDS is failed, and retried once.
HEARTBEAT_SECONDS = 30
GRACE_SECONDS = 120


def open_storage(url: str) -> RDBStorage:
    sqlite = url.startswith("sqlite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(
            url,
            engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    if sqlite:
        _serialize_sqlite_transactions(storage.engine)
    return storage


def _serialize_sqlite_transactions(engine: Any) -> None:
    """Make every transaction on a SQLite study take the write lock when it begins.

    SQLite has no SELECT … FOR UPDATE, so two processes could both read a waiting trial (the
    enqueued defaults) before either marks it running, and both run it. BEGIN IMMEDIATE makes
    that read-then-write one step (SQLAlchemy's recipe for serializable SQLite).
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite's own BEGIN would come too late

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners would not have them
