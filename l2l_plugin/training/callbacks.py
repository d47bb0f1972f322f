"""How meta-training reports progress (CLI progress bar, MLflow metrics, service job state)."""

from __future__ import annotations

from dataclasses import dataclass


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

    def on_iteration(self, progress: MetaTrainProgress) -> None:
        """After every meta-gradient step (skipped or not)."""

    def on_validation(self, progress: MetaTrainProgress) -> None:
        """After every validation; ``progress.validation_loss`` is the new value."""

    def should_stop(self) -> bool:
        """Return True to cancel the run (checked after every meta-iteration)."""
        return False


class TqdmProgress(MetaTrainCallback):
    """A progress bar with the latest meta-loss and validation loss."""

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

    def close(self) -> None:
        self.bar.close()
