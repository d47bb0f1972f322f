"""Shared pieces of the service tests (test_api*.py): tiny requests, an isolated MLflow store,
an in-process client, and a real `l2l serve` process on its own port and data directory."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import TINY_META

FAMILY = "quadratic"
FAMILY_CONFIG = {"dim": 4}
TOKEN = "test-token-0123456789"
TERMINAL = ("succeeded", "failed", "cancelled")


def tiny_request(**changes: Any) -> dict[str, Any]:
    """A meta-train body that finishes in seconds (the TINY_META recipe of the library's tests)."""
    body: dict[str, Any] = {
        "family": FAMILY,
        "family_config": dict(FAMILY_CONFIG),
        "meta_overrides": json.loads(json.dumps(TINY_META)),
        "register": True,
    }
    body.update(changes)
    return body


def reset_mlflow_uris() -> None:
    """Forget tracking/registry URIs an earlier test set in this process."""
    import mlflow
    from mlflow.tracking._model_registry import utils

    from l2l_registry import store as store_module

    mlflow.set_tracking_uri(None)
    store_module._applied_default = None
    utils._registry_uri = None


_TEMPLATE: list[Path] = []


def empty_mlflow_store(directory: Path) -> Path:
    """``directory`` holding an embedded MLflow store whose tables already exist.

    Creating them (MLflow's migrations) takes seconds; every store of these tests starts as a
    copy of one made once per test session.
    """
    if not _TEMPLATE:
        import tempfile

        from l2l_registry.store import configure

        template = Path(tempfile.mkdtemp(prefix="l2l-api-mlflow-template-"))
        atexit.register(shutil.rmtree, template, True)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("L2L_MLFLOW_DIR", str(template))
            patch.delenv("MLFLOW_TRACKING_URI", raising=False)
            reset_mlflow_uris()
            from l2l_registry.store import client

            client(configure()).search_experiments(max_results=1)
            reset_mlflow_uris()
        _TEMPLATE.append(template)
    directory.mkdir(parents=True, exist_ok=True)
    # SQLite's backup API, not a file copy: a store in WAL mode (l2l_api makes the embedded store
    # one) keeps recent pages in its -wal file.
    import sqlite3

    with sqlite3.connect(_TEMPLATE[0] / "mlflow.db") as source, sqlite3.connect(directory / "mlflow.db") as copy:
        source.backup(copy)
    source.close()
    copy.close()
    return directory


@contextmanager
def isolated_mlflow(directory: Path) -> Iterator[None]:
    """The embedded MLflow store in ``directory`` for this process and the workers it spawns."""
    empty_mlflow_store(directory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("L2L_MLFLOW_DIR", str(directory))
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        for name in list(os.environ):
            if name.startswith("L2L_API_"):
                patch.delenv(name)
        reset_mlflow_uris()
        try:
            yield
        finally:
            reset_mlflow_uris()


@contextmanager
def api_client(data_dir: Path, **settings: Any) -> Iterator[Any]:
    """A TestClient over a fresh app (its lifespan runs: job store, recovery, worker pool)."""
    from fastapi.testclient import TestClient

    from l2l_api.app import create_app
    from l2l_api.settings import Settings

    app = create_app(Settings(data_dir=data_dir, **settings))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for(
    fetch: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    timeout: float,
    interval: float = 0.2,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s; last value: {value}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveService:
    """`l2l serve` in a subprocess on 127.0.0.1 with its own port and data directory."""

    def __init__(
        self, data_dir: Path, log_path: Path, env: dict[str, str] | None = None, workers: int = 1
    ) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("L2L_API_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY"))
            },
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "L2L_MLFLOW_DIR": str(data_dir / "mlflow"),
            "L2L_API_TOKEN": TOKEN,
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> LiveService:
        l2l = Path(sys.executable).with_name("l2l")
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                str(l2l),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
                "--data-dir",
                str(self.data_dir),
                "--log-level",
                "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"l2l serve exited with {self.process.returncode}:\n{self.log()}")
            try:
                health = self.request("GET", "/health")[1]
                if health["workers"]["alive"] == self.workers:
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"l2l serve did not become healthy in {timeout:g} s:\n{self.log()}")

    def request(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def job(self, job_id: str) -> dict[str, Any]:
        status, body = self.request("GET", f"/jobs/{job_id}")
        assert status == 200, body
        return body

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, as when the machine or the container dies."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""
