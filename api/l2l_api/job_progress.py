"""A running job's meta-training progress, written into its job record; the checks that stop it
(cancelled, the service gone, the job taken over by another attempt)."""

from __future__ import annotations

import os
import time

from l2l_api.db import Job, JobStore
from l2l_plugin.pipeline import PHASE_META_TRAINING, PhaseProgress
from l2l_plugin.training import MetaTrainCallback, MetaTrainingCancelled, MetaTrainProgress

PROGRESS_WRITE_SECONDS = 0.5  # progress is written at most this often (and at every validation)


class JobLost(MetaTrainingCancelled):
    """The job is no longer this worker's (service gone, or another attempt owns it)."""

    stop_reason = "interrupted"  # what the MLflow run's tag says until an attempt finishes it


class JobProgressReporter(MetaTrainCallback):
    """Meta-training progress into the job record; stops the run on cancellation or a lost job."""

    def __init__(self, store: JobStore, job: Job, parent_pid: int) -> None:
        self.store = store
        self.job = job
        self.parent_pid = parent_pid
        self.lost = False
        self.cancelled = False
        self._last_write = 0.0
        self._first_iteration: int | None = None

    def _write(self, progress: MetaTrainProgress, validation: bool) -> None:
        message = None
        if self._first_iteration is None:
            self._first_iteration = progress.iteration
            if self.job.attempt > 1:
                done = max(progress.iteration - 1, 0)
                message = (
                    f"resumed (attempt {self.job.attempt}) from the checkpoint at meta-iteration {done}"
                    if done
                    else f"restarted from the beginning (attempt {self.job.attempt}): no checkpoint yet"
                )
                if self.job.message:  # why the previous attempt ended (a worker death's cause)
                    message = f"{message}; before: {self.job.message}"
        owned, cancel = self.store.report_progress(
            self.job.id,
            self.job.attempt,
            iterations_done=progress.iteration,
            iterations_total=progress.total,
            meta_loss=progress.meta_loss,
            validation_loss=progress.validation_loss if validation else None,
            best_validation_loss=progress.best_validation_loss,
            message=message,
        )
        self._last_write = time.monotonic()
        self.lost = self.lost or not owned
        self.cancelled = self.cancelled or cancel

    def on_iteration(self, progress: MetaTrainProgress) -> None:
        if (
            self._first_iteration is None
            or time.monotonic() - self._last_write >= PROGRESS_WRITE_SECONDS
            or progress.iteration == progress.total
        ):
            self._write(progress, validation=False)

    def on_validation(self, progress: MetaTrainProgress) -> None:
        self._write(progress, validation=True)

    def parent_gone(self) -> bool:
        return os.getppid() != self.parent_pid

    def should_stop(self) -> bool:
        if self.parent_gone():
            self.lost = True
        return self.lost or self.cancelled

    def check(self, where: str = "before publishing", **progress: object) -> None:
        """Between phases and evaluated optimizers: write ``progress``, raise if the job should stop."""
        if self.parent_gone():
            raise JobLost("the service stopped")
        owned, cancel = self.store.report_progress(self.job.id, self.job.attempt, **progress)  # type: ignore[arg-type]
        if not owned:
            raise JobLost("the job was taken over")
        if cancel:
            raise MetaTrainingCancelled(f"cancelled {where}")

    def on_phase(self, progress: PhaseProgress) -> None:
        """The phase into the job record (and its message); a cancelled job stops here."""
        if progress.phase == PHASE_META_TRAINING:
            # Meta-iterations are the progress; the first one writes the resume message.
            self.store.report_progress(self.job.id, self.job.attempt, phase=progress.phase)
            return
        done = f" ({progress.done}/{progress.total})" if progress.total is not None else ""
        self.check(
            f"while {progress.phase}{done}",
            phase=progress.phase,
            phase_done=progress.done,
            phase_total=progress.total,
            message=progress.describe(),
        )
