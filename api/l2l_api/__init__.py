"""l2l-api: the HTTP service of l2l-plugin (FastAPI).

    l2l serve --host 127.0.0.1 --port 8000 --workers 1

or ``uvicorn --factory l2l_api.app:create_app``. l2l_api.settings lists every environment variable.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: worker processes import l2l_api.worker and need none of FastAPI.
    if name == "create_app":
        from l2l_api.app import create_app

        return create_app
    raise AttributeError(f"module 'l2l_api' has no attribute {name!r}")
