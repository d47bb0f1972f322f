"""``l2l serve``: the service under uvicorn, added to the ``l2l`` CLI through the
``l2l_plugin.cli`` entry-point group."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from l2l_api.settings import ENV_PREFIX, Settings, prepare_environment

FLAGS = ("host", "port", "workers", "data_dir")  # Settings fields a flag sets (over the environment)


def serve_handler(args: argparse.Namespace) -> int:
    """The service for these flags and L2L_API_* variables. A user-facing error (L2LError) is
    the ``l2l`` command's to print, once, like every other command's."""
    try:
        settings = Settings(**{flag: getattr(args, flag) for flag in FLAGS if getattr(args, flag) is not None})
    except ValidationError as exc:
        print(f"l2l serve: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    prepare_environment(settings)
    # uvicorn configures only its own loggers; the service's (jobs, workers, errors) go to stderr too.
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import uvicorn

    from l2l_api.app import create_app

    # The application itself, built from these settings: uvicorn runs it in this process. One
    # HTTP process by design (it owns the job queue and the worker pool; --workers are job
    # workers, spawned with the settings they need), so uvicorn needs no import string.
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=15,
        proxy_headers=args.proxy_headers,
    )
    return 0


def extend(commands: argparse._SubParsersAction) -> None:
    """Entry point of the ``l2l_plugin.cli`` group."""
    serve = commands.add_parser(
        "serve",
        help="run the HTTP service (families, meta-training jobs, registered optimizers)",
        description="Start the l2l service with uvicorn. Every flag also reads an environment variable; "
        "the bearer token is only read from L2L_API_TOKEN (a flag would show in `ps`).",
    )
    serve.add_argument("--host", help=f"interface to listen on (env {ENV_PREFIX}HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help=f"port (env {ENV_PREFIX}PORT, default 8000)")
    serve.add_argument(
        "--workers",
        type=int,
        help=f"meta-training worker processes (env {ENV_PREFIX}WORKERS, default 1; 0 queues without running)",
    )
    serve.add_argument(
        "--data-dir",
        type=Path,
        help=f"job store, job folders and the embedded MLflow store (env {ENV_PREFIX}DATA_DIR, "
        "default ~/.local/share/l2l-plugin)",
    )
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument(
        "--proxy-headers", action="store_true", help="trust X-Forwarded-* headers (behind a reverse proxy)"
    )
    serve.set_defaults(handler=serve_handler)
