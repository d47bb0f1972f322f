"""The user's folders for the project's data and caches, as the platform places them
(platformdirs: ``$XDG_DATA_HOME`` / ``$XDG_CACHE_HOME`` on Linux, else ``~/.local/share`` and
``~/.cache``; the usual folders on macOS and Windows). Nothing depends on the working directory."""

from __future__ import annotations

from pathlib import Path

import platformdirs

APP_NAME = "l2l-plugin"


def user_data_dir() -> Path:
    """Where the registry's embedded MLflow store and the service's job store live by default
    (not created here); the registry and the service share it, so each sees what the other wrote."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


def user_cache_dir() -> Path:
    """Scratch that may be deleted any time (the champion locks when no shared folder is named)."""
    return platformdirs.user_cache_path(APP_NAME, appauthor=False)
