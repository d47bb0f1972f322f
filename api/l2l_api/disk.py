"""Free space in the data directory: a full disk kills workers mid-checkpoint and makes every
write fail, so the service refuses new jobs and says so in /health before it gets there."""

from __future__ import annotations

import shutil
from pathlib import Path


def disk_free_mb(directory: Path) -> float | None:
    """Megabytes free for this process in ``directory`` (or its nearest existing parent)."""
    path = Path(directory)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free / 2**20
    except OSError:
        return None
