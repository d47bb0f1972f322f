"""How meta-training reports progress (CLI progress bar, MLflow metrics, service job state).

The loop calls ``on_begin`` once before anything else and ``on_end`` once when the run ends,
with its result or the exception that ended it, so a callback that holds something (a progress
bar, buffered metrics) releases it there; nobody has to close or flush it by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from l2l_plugin.families import TaskFamily
    from l2l_plugin.training.config import MetaTrainConfig
    from l2l_plugin.training.result import MetaTrainResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetaTrainStart:
    """The run about to start, as ``on_begin`` sees it (before warm start or a checkpoint)."""

    family: TaskFamily
    config: MetaTrainConfig
    total: int  # the meta-iterations asked for
    checkpoint_dir: Path | None


@dataclass(frozen=True)
class MetaTrainProgress:
    iteration: int
    total: int
    meta_loss: float | None
    validation_loss: float | None
    best_validation_loss: float | None
    skipped_nonfinite: int
    elapsed_seconds: float


class MetaTrainCallback:
    """Override what you need; every hook is a no-op by default."""

    def on_begin(self, start: MetaTrainStart) -> None:
        """Once, before the run does anything; ``on_end`` follows whatever happens next."""

    def on_iteration(self, progress: MetaTrainProgress) -> None:
        """After every meta-gradient step (skipped or not)."""

    def on_validation(self, progress: MetaTrainProgress) -> None:
        """After every validation; ``progress.validation_loss`` is the new value."""

    def should_stop(self) -> bool:
        """Return True to cancel the run (checked after every meta-iteration)."""
        return False

    def on_end(self, outcome: MetaTrainResult | BaseException) -> None:
        """Once, when the run ends: its result, or the exception it is about to raise."""


def begin_callbacks(callbacks: Sequence[MetaTrainCallback], start: MetaTrainStart) -> None:
    """``on_begin`` of each in order; if one raises, those already begun are ended with its error."""
    for begun, callback in enumerate(callbacks):
        try:
            callback.on_begin(start)
        except BaseException as error:
            end_callbacks(callbacks[:begun], error)
            raise


def end_callbacks(callbacks: Sequence[MetaTrainCallback], outcome: MetaTrainResult | BaseException) -> None:
    """``on_end`` of every callback, even when one of them raises.

    After a failed run the run's own exception is the one that matters: an ``on_end`` error is
    logged, not raised. After a successful run the first ``on_end`` error is raised (once every
    callback has had its call), so a flush that failed is not mistaken for a finished run.
    """
    first_error: Exception | None = None
    for callback in callbacks:
        try:
            callback.on_end(outcome)
        except Exception as error:  # every callback gets its call; see the docstring
            if isinstance(outcome, BaseException):
                logger.warning("%s.on_end failed after the run failed", type(callback).__name__, exc_info=True)
            elif first_error is None:
                first_error = error
    if first_error is not None:
        raise first_error


class TqdmProgress(MetaTrainCallback):
    """A progress bar with the latest meta-loss and validation loss; closed when the run ends."""

    def __init__(self, total: int, **tqdm_kwargs: object) -> None:
        from tqdm.auto import tqdm

        # At most one redraw a second: logs of non-interactive runs (make run, CI) stay readable.
        tqdm_kwargs.setdefault("mininterval", 1.0)
        self.bar = tqdm(total=total, desc="meta-train", unit="it", **tqdm_kwargs)

    def on_iteration(self, progress: MetaTrainProgress) -> None:
        postfix = {"meta_loss": f"{progress.meta_loss:.4g}" if progress.meta_loss is not None else "skipped"}
        if progress.best_validation_loss is not None:
            postfix["val"] = f"{progress.validation_loss:.4g}"
            postfix["best"] = f"{progress.best_validation_loss:.4g}"
        if progress.skipped_nonfinite:
            postfix["skipped"] = str(progress.skipped_nonfinite)
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(progress.iteration - self.bar.n)  # redraws at most every mininterval

    def on_end(self, outcome: MetaTrainResult | BaseException) -> None:
        self.close()

    def close(self) -> None:
        """Close the bar (idempotent): for a bar whose run never started."""
        self.bar.close()
