"""Why a job failed, in words a user can act on: MLflow unreachable, the disk full, or the error itself."""

from __future__ import annotations

import errno


def describe_error(exc: BaseException) -> str:
    """``Type: message`` for a job's error, without secrets; MLflow connectivity said plainly."""
    from l2l_registry.redaction import redact

    text = f"{type(exc).__name__}: {exc}"
    if _is_mlflow_unreachable(exc):
        text = f"MLflow is unreachable ({text})"
    return redact(text)


DISK_FULL_MB = 1.0  # less free space than this when a job fails: the disk is why


class DiskFull(OSError):
    """The job failed because the disk holding its folder (or the job store) is full."""

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT anywhere in the chain, or SQLite's "database or disk is full"."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "database or disk is full" in str(seen) or "No space left on device" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_mlflow_unreachable(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if isinstance(seen, ConnectionError | TimeoutError) or name in ("ConnectionError", "MaxRetryError"):
            return True
        if "Max retries exceeded" in str(seen) or "Failed to establish a new connection" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
