"""The worker pool: starts the worker processes, watches them, and enforces the job limits.

A thread of the API process (not an asyncio task: starting a process blocks). Every tick it

- restarts a worker that died. Its job resumes from its checkpoint when one was written (up to
  ``max_resumes`` interruptions, like a service restart), else it fails: a worker that dies
  before its first checkpoint most likely hit something deterministic (out of memory). Either
  way the job says how the process ended and why: the worker writes its fatal error (a full
  disk, a database it can no longer write) into memory shared with this thread, since the
  disk or the database may be what failed;
- retries setting the MLflow status of runs whose job ended while MLflow was unreachable;
- kills the worker of a job whose cancellation was not honoured within the grace period (a
  long evaluation does not look at the cancel flag) and marks the job cancelled;
- kills the worker of a job over the time limit and marks the job failed.

Workers are spawned from this thread, which is also what their parent-death signal watches.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from l2l_api.db import Job, JobState, JobStore, utcnow
from l2l_api.joblog import log_job_end
from l2l_api.runs import close_pending_runs, close_run
from l2l_api.settings import Settings
from l2l_api.worker import CAUSE_BYTES, worker_main
from l2l_plugin.pipeline import CHECKPOINT_DIR, STOP_CANCELLED
from l2l_plugin.training.checkpoint import CHECKPOINT_NAME

logger = logging.getLogger("l2l_api.supervisor")

TICK_SECONDS = 0.5
CLOSE_RUNS_SECONDS = 15.0  # how often runs left open by an MLflow outage are retried
RESTART_BACKOFF_SECONDS = (1.0, 5.0, 30.0)  # a worker that keeps dying is restarted less often

# Stop reasons of the jobs the pool ends itself.
STOP_WORKER_DIED = "worker died"
STOP_JOB_TIME_LIMIT = "job time limit"


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    started: float = 0.0
    quick_deaths: int = 0
    next_start: float = 0.0
    cause: Any = None  # shared memory: the worker's fatal error, written just before it exits

    def read_cause(self) -> str | None:
        if self.cause is None:
            return None
        text = bytes(self.cause).split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        return text or None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def lower_priority(pid: int | None, niceness: int) -> None:
    """Raise a just-started worker's nice value by ``niceness`` (its threads and children, started
    later, inherit it), so meta-training yields the CPU to requests on a busy machine."""
    if pid is None or niceness <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness))
    except OSError as exc:  # gone already, or not allowed: it runs at the service's priority
        logger.warning("could not lower the priority of worker pid %s: %s", pid, exc)


class WorkerPool:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.slots = [_Slot(i) for i in range(settings.workers)]
        # Workers inherit it: a job's cpu_threads 'auto' never picks more than the service allows.
        os.environ["L2L_MAX_CPU_THREADS"] = str(settings.max_cpu_threads)
        # spawn, not fork: the API process has threads (and torch), which fork does not copy safely.
        self._context = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._next_close_runs = 0.0

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.slots:
            return
        self._thread = threading.Thread(target=self._run, name="l2l-worker-pool", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> list[int]:
        """Stop the thread and the workers; returns the slots whose worker was running a job."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        busy = {job.worker_slot for job in self.store.running()}
        with self._lock:
            processes = [slot.process for slot in self.slots if slot.process is not None]
            for process in processes:
                if process.is_alive():
                    process.terminate()
            deadline = time.monotonic() + timeout
            for process in processes:
                process.join(max(0.0, deadline - time.monotonic()))
                if process.is_alive():
                    process.kill()
                    process.join(2)
        return [slot for slot in busy if slot is not None]

    # -- state for /health ---------------------------------------------------------------------

    def status(self) -> list[dict[str, object]]:
        running = {job.worker_slot: job.id for job in self.store.running()}
        with self._lock:
            return [
                {
                    "slot": slot.index,
                    "pid": slot.process.pid if slot.process is not None else None,
                    "alive": bool(slot.process is not None and slot.process.is_alive()),
                    "job_id": running.get(slot.index),
                }
                for slot in self.slots
            ]

    # -- the loop --------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception:  # noqa: BLE001 - the pool must outlive a failed tick (e.g. a locked DB)
                logger.exception("worker pool tick failed")
            self._stop.wait(TICK_SECONDS)

    def _tick(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            process = slot.process
            if process is not None and not process.is_alive():
                self._worker_died(slot, process)
                slot.process = None
            if slot.process is None and now >= slot.next_start and not self._stop.is_set():
                self._spawn(slot)
        self._enforce_limits()
        if now >= self._next_close_runs:
            self._next_close_runs = now + CLOSE_RUNS_SECONDS
            close_pending_runs(self.store, self.settings.mlflow_request_timeout_seconds)

    def _spawn(self, slot: _Slot) -> None:
        cause = self._context.RawArray("c", CAUSE_BYTES)
        process = self._context.Process(
            target=worker_main,
            args=(
                slot.index,
                self.settings.job_database_url,
                str(self.settings.jobs_dir),
                os.getpid(),
                self.settings.poll_seconds,
                cause,
            ),
            name=f"l2l-worker-{slot.index}",
            daemon=False,  # daemonic processes cannot have children; torch may start some
        )
        with self._lock:
            process.start()
            slot.process = process
            slot.cause = cause
            slot.started = time.monotonic()
        lower_priority(process.pid, self.settings.worker_niceness)
        logger.info("worker %d started (pid %s)", slot.index, process.pid)

    def _worker_died(self, slot: _Slot, process: BaseProcess) -> None:
        """Resume or fail the dead worker's job. Raises when the job store cannot be written (a
        full disk): the slot keeps its dead process and the next tick tries again."""
        how = describe_exit(process.exitcode)
        cause = slot.read_cause()
        if cause:
            how = f"{how}: {cause}"
        logger.warning("worker %d (pid %s) ended: %s", slot.index, process.pid, how)
        for job in self.store.running():
            if job.worker_slot == slot.index and job.worker_pid == process.pid:
                self._resume_or_fail(job, how)
        lived = time.monotonic() - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if lived < 60 else 0
        delay = (
            RESTART_BACKOFF_SECONDS[min(slot.quick_deaths, len(RESTART_BACKOFF_SECONDS)) - 1]
            if slot.quick_deaths
            else 0
        )
        slot.next_start = time.monotonic() + delay

    def has_checkpoint(self, job: Job) -> bool:
        return (self.settings.jobs_dir / job.id / CHECKPOINT_DIR / CHECKPOINT_NAME).is_file()

    def _resume_or_fail(self, job: Job, how: str) -> None:
        resumable = job.cancel_requested_at is None and self.has_checkpoint(job)
        if resumable and job.interruptions < self.settings.max_resumes:
            message = (
                f"the worker process ended unexpectedly during attempt {job.attempt} ({how}); "
                "resumes from its last checkpoint"
            )
            if self.store.requeue(job.id, job.attempt, message, True):
                logger.warning("job %s: %s", job.id, message)
            return
        limit = "" if not self.has_checkpoint(job) else (
            f"; interrupted {job.interruptions + 1} times (L2L_API_MAX_RESUMES={self.settings.max_resumes})"
        )
        self._fail(
            job, JobState.FAILED, f"the worker process running this job ended unexpectedly ({how}){limit}", STOP_WORKER_DIED
        )

    def _enforce_limits(self) -> None:
        now = utcnow()
        grace = dt.timedelta(seconds=self.settings.cancel_grace_seconds)
        timeout = dt.timedelta(seconds=self.settings.job_timeout_seconds)
        for job in self.store.running():
            if job.cancel_requested_at is not None and now - job.cancel_requested_at > grace:
                self._kill_worker_of(job)
                self._fail(
                    job,
                    JobState.CANCELLED,
                    None,
                    STOP_CANCELLED,
                    message=f"cancelled: the worker was stopped after "
                    f"{self.settings.cancel_grace_seconds:g} s without reaching a safe point",
                )
            elif job.attempt_started_at is not None and now - job.attempt_started_at > timeout:
                self._kill_worker_of(job)
                self._fail(
                    job,
                    JobState.FAILED,
                    f"exceeded the job time limit of {self.settings.job_timeout_seconds:g} s "
                    "(L2L_API_JOB_TIMEOUT_SECONDS)",
                    STOP_JOB_TIME_LIMIT,
                )

    def _kill_worker_of(self, job: Job) -> None:
        with self._lock:
            for slot in self.slots:
                process = slot.process
                if slot.index == job.worker_slot and process is not None and process.pid == job.worker_pid:
                    process.kill()
                    process.join(5)
                    slot.process = None  # restarted by the next tick, without counting as a crash

    def _fail(
        self, job: Job, state: JobState, error: str | None, stop_reason: str, message: str | None = None
    ) -> None:
        if self.store.finish(job.id, job.attempt, state, error=error, message=message, stop_reason=stop_reason):
            close_run(
                self.store,
                job.id,
                job.mlflow_run_id,
                "KILLED" if state == JobState.CANCELLED else "FAILED",
                stop_reason,
                timeout=self.settings.mlflow_request_timeout_seconds,
            )
            log_job_end(logger, self.store, job.id)
