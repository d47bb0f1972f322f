"""The worker pool: starts the worker processes, watches them, and enforces the job limits.

A thread of the API process (not an asyncio task: starting a process blocks). Every tick it

- restarts a worker that died, after failing the job it was running (a worker that dies while
  the service is up most likely hit something deterministic, like running out of memory, so the
  job is not retried; the reason says how the process ended);
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

from l2l_api.db import CANCELLED, FAILED, Job, JobStore, utcnow
from l2l_api.joblog import log_job_end
from l2l_api.settings import Settings
from l2l_api.worker import worker_main
from l2l_plugin.pipeline import STOP_CANCELLED

logger = logging.getLogger("l2l_api.supervisor")

TICK_SECONDS = 0.5
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


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class WorkerPool:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.slots = [_Slot(i) for i in range(settings.workers)]
        # spawn, not fork: the API process has threads (and torch), which fork does not copy safely.
        self._context = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

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

    def _spawn(self, slot: _Slot) -> None:
        process = self._context.Process(
            target=worker_main,
            args=(
                slot.index,
                self.settings.job_database_url,
                str(self.settings.jobs_dir),
                os.getpid(),
                self.settings.poll_seconds,
            ),
            name=f"l2l-worker-{slot.index}",
            daemon=False,  # daemonic processes cannot have children; torch may start some
        )
        with self._lock:
            process.start()
            slot.process = process
            slot.started = time.monotonic()
        logger.info("worker %d started (pid %s)", slot.index, process.pid)

    def _worker_died(self, slot: _Slot, process: BaseProcess) -> None:
        how = describe_exit(process.exitcode)
        logger.warning("worker %d (pid %s) ended: %s", slot.index, process.pid, how)
        for job in self.store.running():
            if job.worker_slot == slot.index and job.worker_pid == process.pid:
                self._fail(
                    job, FAILED, f"the worker process running this job ended unexpectedly ({how})", STOP_WORKER_DIED
                )
        lived = time.monotonic() - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if lived < 60 else 0
        delay = (
            RESTART_BACKOFF_SECONDS[min(slot.quick_deaths, len(RESTART_BACKOFF_SECONDS)) - 1]
            if slot.quick_deaths
            else 0
        )
        slot.next_start = time.monotonic() + delay

    def _enforce_limits(self) -> None:
        now = utcnow()
        grace = dt.timedelta(seconds=self.settings.cancel_grace_seconds)
        timeout = dt.timedelta(seconds=self.settings.job_timeout_seconds)
        for job in self.store.running():
            if job.cancel_requested_at is not None and now - job.cancel_requested_at > grace:
                self._kill_worker_of(job)
                self._fail(
                    job,
                    CANCELLED,
                    None,
                    STOP_CANCELLED,
                    message=f"cancelled: the worker was stopped after "
                    f"{self.settings.cancel_grace_seconds:g} s without reaching a safe point",
                )
            elif job.attempt_started_at is not None and now - job.attempt_started_at > timeout:
                self._kill_worker_of(job)
                self._fail(
                    job,
                    FAILED,
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
        self, job: Job, state: str, error: str | None, stop_reason: str, message: str | None = None
    ) -> None:
        if self.store.finish(job.id, job.attempt, state, error=error, message=message, stop_reason=stop_reason):
            from l2l_api import registry_adapter

            try:
                registry_adapter.end_run(
                    job.mlflow_run_id, "KILLED" if state == CANCELLED else "FAILED", stop_reason
                )
            except Exception:  # noqa: BLE001 - the job record is what matters; the run stays RUNNING
                logger.exception("could not end MLflow run %s of job %s", job.mlflow_run_id, job.id)
            log_job_end(logger, self.store, job.id)
