"""The job store and the champion lock on a real PostgreSQL (compose.yaml's database).

A throwaway server per test session: ``initdb`` into a temporary folder, ``postgres`` on
127.0.0.1 and a free port, stopped at the end. Skipped, with the reason, where no PostgreSQL
binaries are installed (Debian: ``apt-get install postgresql``) or its driver (psycopg, the
``api[postgres]`` extra) is missing. PostgreSQL refuses to run as root, so under root the
server runs as the ``postgres`` system user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# SQLAlchemy's driver for postgresql:// URLs (2.1: psycopg 3), the api[postgres] extra.
psycopg = pytest.importorskip("psycopg", reason="no PostgreSQL driver: pip install -c constraints.txt './api[postgres]'")

from l2l_api.db import JobResult, JobRow, JobStore  # noqa: E402

from helpers import CHAMPION_LOCK_HOLDER, assert_champion_lock_excludes_another_process  # noqa: E402

PASSWORD = "pg-" + uuid.uuid4().hex
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"  # the stored values


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """Whom the server runs as: the current user, or ``postgres`` when that is root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of a fresh server's ``postgres`` database (user ``l2l``, password auth)."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (pg_ctl on PATH or /usr/lib/postgresql/*/bin): apt-get install postgresql")
    user = _server_user()
    # Not under pytest's tmp_path (private to the current user; the server may be another), and
    # for another user in /tmp itself: $TMPDIR may sit in a folder that user cannot enter.
    folder = Path(tempfile.mkdtemp(prefix="l2l-pg-", dir="/tmp" if user is not None else None))
    data, log, password_file = folder / "data", folder / "server.log", folder / "password"
    password_file.write_text(PASSWORD)
    if user is not None:
        for path in (folder, password_file):
            os.chown(path, user.pw_uid, user.pw_gid)
    as_user = {"user": user.pw_uid, "group": user.pw_gid} if user is not None else {}
    port = _free_port()
    subprocess.run(
        [bin_dir / "initdb", "-D", data, "-U", "l2l", "--auth=scram-sha-256", f"--pwfile={password_file}",
         "--encoding=UTF8", "--no-sync"],
        check=True, capture_output=True, timeout=120, cwd=folder, **as_user,
    )
    # Loopback only, its sockets in its own folder; no fsync (a test database, thrown away).
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off -c full_page_writes=off"
    started = subprocess.run(
        [bin_dir / "pg_ctl", "start", "-w", "-t", "120", "-D", data, "-l", log, "-o", options],
        capture_output=True, text=True, timeout=180, cwd=folder, **as_user,
    )
    if started.returncode != 0:
        detail = log.read_text() if log.exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{detail}")
    try:
        yield f"postgresql://l2l:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([bin_dir / "pg_ctl", "stop", "-D", data, "-m", "immediate"],
                       capture_output=True, timeout=60, cwd=folder, **as_user)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """A database of its own for each test (the job table is created by JobStore)."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def _create(store: JobStore, job_id: str) -> None:
    """A queued job with its MLflow run attached (what a worker may claim)."""
    store.create(job_id, "quadratic", {"dim": 4}, {"meta_iterations": 6}, True, iterations_total=6,
                 mlflow_run_id=f"run-{job_id[:8]}")


def test_a_job_goes_through_its_states_on_postgresql(database_url: str) -> None:
    store = JobStore(database_url)
    assert store.engine.dialect.name == "postgresql"
    _create(store, "a" * 32)
    created = store.get("a" * 32)
    assert created is not None and created.state == QUEUED and created.family_config == {"dim": 4}
    assert created.created_at.utcoffset() is not None  # aware UTC back from timestamptz

    job = store.claim(slot=0, pid=1234)
    assert job is not None and job.state == RUNNING and job.attempt == 1 and job.worker_pid == 1234
    assert store.claim(slot=1, pid=99) is None  # nothing else queued
    assert store.report_progress(job.id, 1, iterations_done=3, meta_loss=float("nan"), message="x" * 5000) == (True, False)
    progressed = store.get(job.id)
    assert progressed is not None and progressed.iterations_done == 3 and progressed.meta_loss is None
    assert progressed.message is not None and len(progressed.message) == 4000

    # The supervisor requeues it (a worker died); the next claim is attempt 2, and the old
    # attempt's writes are fenced off.
    assert store.requeue(job.id, 1, "worker died", interrupted=True)
    again = store.claim(slot=1, pid=5678)
    assert again is not None and again.attempt == 2 and again.interruptions == 1
    assert store.report_progress(job.id, 1, iterations_done=5) == (False, False)
    assert not store.finish(job.id, 1, FAILED, error="stale worker")
    assert store.request_cancel(job.id)
    assert store.report_progress(job.id, 2, iterations_done=6) == (True, True)

    result = JobResult("models:/l2l-quadratic/1", "l2l-quadratic", "1", True, "first version")
    assert store.finish(job.id, 2, SUCCEEDED, result=result)
    assert not store.finish(job.id, 2, FAILED)  # terminal: nothing moves it any more
    done = store.get(job.id)
    assert done is not None and done.state == SUCCEEDED and done.model_version == "1" and done.error is None
    assert [j.id for j in store.list_jobs(state=SUCCEEDED)] == [job.id] and store.count(SUCCEEDED) == 1

    _create(store, "b" * 32)
    assert store.cancel_queued("b" * 32) and not store.cancel_queued("b" * 32)
    store.dispose()


def test_a_missing_column_is_added_on_postgresql(database_url: str) -> None:
    JobStore(database_url).dispose()
    engine = JobStore(database_url).engine
    with engine.begin() as connection:
        connection.exec_driver_sql(f"ALTER TABLE {JobRow.__tablename__} DROP COLUMN search_result")
    engine.dispose()
    store = JobStore(database_url)  # an older table: the column comes back
    _create(store, "c" * 32)
    job = store.claim(0, 1)
    assert job is not None
    assert store.finish(job.id, 1, SUCCEEDED, result=JobResult("u", search={"beat_defaults": False}))
    assert store.get(job.id).search_result == {"beat_defaults": False}  # type: ignore[union-attr]
    store.dispose()


CLAIMER = """
import json, sys
from l2l_api.db import JobStore
store = JobStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # start together
claimed = []
while (job := store.claim(int(sys.argv[2]), 0)) is not None:
    claimed.append(job.id)
print(json.dumps(claimed), flush=True)
"""


@pytest.mark.slow  # processes that import torch (through l2l_registry)
def test_concurrent_workers_never_claim_one_job_twice(database_url: str) -> None:
    store = JobStore(database_url)
    jobs = {uuid.uuid4().hex for _ in range(30)}
    for job_id in sorted(jobs):
        _create(store, job_id)
    workers = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, database_url, str(slot)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for slot in range(2)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    import json

    claimed = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]
    everything = [job_id for part in claimed for job_id in part]
    assert sorted(everything) == sorted(jobs)  # each exactly once
    assert store.count(RUNNING) == len(jobs)
    store.dispose()


@pytest.mark.slow  # processes that import torch (through l2l_registry)
def test_the_champion_lock_excludes_other_processes_on_postgresql(database_url: str) -> None:
    store = JobStore(database_url)
    assert_champion_lock_excludes_another_process(store, database_url)
    # Another model's lock is independent; the same model's excludes this process's other threads.
    with store.champion_lock("l2l-quadratic"):
        taken: dict[str, threading.Event] = {name: threading.Event() for name in ("l2l-mnist_mlp", "l2l-quadratic")}

        def take(name: str) -> None:
            with store.champion_lock(name):
                taken[name].set()

        threads = [threading.Thread(target=take, args=(name,), daemon=True) for name in taken]
        for thread in threads:
            thread.start()
        assert taken["l2l-mnist_mlp"].wait(10)
        assert not taken["l2l-quadratic"].wait(1)
    assert taken["l2l-quadratic"].wait(10)
    store.dispose()


@pytest.mark.slow  # processes that import torch (through l2l_registry)
def test_a_killed_holder_releases_the_champion_lock(database_url: str) -> None:
    store = JobStore(database_url)
    holder = subprocess.Popen([sys.executable, "-c", CHAMPION_LOCK_HOLDER, database_url, "600"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "waiting"
        float(holder.stdout.readline())  # it holds the lock
        acquired = threading.Event()

        def take() -> None:
            with store.champion_lock("l2l-quadratic"):
                acquired.set()

        threading.Thread(target=take, daemon=True).start()
        assert not acquired.wait(2)  # held by the other process
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        # Its connection closes with it, and PostgreSQL drops that session's advisory locks.
        assert acquired.wait(30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
    # And the lock is free again for everyone (the waiter's unlock ran).
    with store.champion_lock("l2l-quadratic"):
        pass
    store.dispose()


def test_the_champion_lock_survives_an_idle_in_transaction_timeout(database_url: str) -> None:
    """Servers often end sessions idle in a transaction (idle_in_transaction_session_timeout);
    the lock's session sits idle for as long as the champion is evaluated, and ending it would
    free the lock under its holder. The lock's session holds no transaction, so it stays."""
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database_url.rsplit('/', 1)[1]} SET idle_in_transaction_session_timeout = '1s'")
    store = JobStore(database_url)
    with store.champion_lock("l2l-quadratic"):
        time.sleep(2.5)
        with psycopg.connect(database_url, autocommit=True) as other:
            free = other.execute("SELECT pg_try_advisory_lock(hashtextextended('l2l-quadratic', 0))").fetchone()
        assert free == (False,)  # still held by us
    with psycopg.connect(database_url, autocommit=True) as other:
        assert other.execute("SELECT pg_try_advisory_lock(hashtextextended('l2l-quadratic', 0))").fetchone() == (True,)
    store.dispose()
