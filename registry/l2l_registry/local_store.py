"""``models:/`` URIs on a SQLite registry, resolved without importing MLflow.

Importing mlflow and opening its SQLAlchemy store costs several seconds in a fresh process
(BENCHMARKS.md, "Loading a registered optimizer"), while all that ``load_optimizer`` needs from
an embedded store is one row of its SQLite file and two files in its artifact folder. So for a
``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI on a ``sqlite:///`` registry
whose version's artifacts are local (``file://``), this module reads the version's row with the
standard library's ``sqlite3`` (read-only) and finds the optimizer's files through the model's
``MLmodel`` file, exactly as MLflow's download would: the files are read in place, so there is
nothing to copy or cache.

It is a fast path only: anything it does not recognise (another scheme, a server, MLflow
workspaces, a schema it does not know, an unknown name, alias or version, a version that is not
READY) returns ``None`` and the caller takes MLflow's own path, which also words the errors.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

from l2l_plugin.artifacts import MANIFEST_NAME
from l2l_registry.conventions import OPTIMIZER_ARTIFACT
from l2l_registry.store import Store, embedded_store, resolve_store

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[0-9]+))$")
_DELETED_STAGE = "Deleted_Internal"  # what MLflow's SQL store writes into a deleted version's row
_READY = "READY"
_SQLITE_PREFIX = "sqlite:///"
FAST_LOAD_ENV = "L2L_FAST_LOAD"  # "0": always go through MLflow


def registry_uri_cheaply(store: Store | None) -> str | None:
    """The registry URI, without importing mlflow when nothing has imported it yet.

    If mlflow is not imported, nothing in this process has called ``mlflow.set_*_uri``: the
    environment and the embedded default are the whole story (``store.resolve_store``'s order).
    """
    workspaces = os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("1", "true")
    if workspaces or os.environ.get("MLFLOW_WORKSPACE"):
        return None  # versions live in a workspace this module does not resolve
    if store is not None:
        return store.registry_uri
    if "mlflow" in sys.modules:
        return resolve_store().registry_uri
    return (
        os.environ.get("MLFLOW_REGISTRY_URI")
        or os.environ.get("MLFLOW_TRACKING_URI")
        or embedded_store().registry_uri
    )


def _sqlite_path(registry_uri: str) -> Path | None:
    if not registry_uri.startswith(_SQLITE_PREFIX) or "?" in registry_uri:
        return None
    path = Path(registry_uri[len(_SQLITE_PREFIX) :])
    return path if path.is_file() else None


def _version_row(db: Path, name: str, alias: str | None, version: str | None) -> tuple[str, str, str] | None:
    """(version, status, storage location) of the version the URI names, or None."""
    connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        columns = {row[1] for row in connection.execute("PRAGMA table_info(model_versions)")}
        if not {"name", "version", "status", "current_stage", "storage_location"} <= columns:
            return None
        workspace = " AND workspace = 'default'" if "workspace" in columns else ""
        if alias is not None:
            found = connection.execute(
                f"SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?{workspace}",
                (name, alias),
            ).fetchone()
            if found is None:
                return None
            version = str(found[0])
        row = connection.execute(
            "SELECT version, status, current_stage, storage_location FROM model_versions "
            f"WHERE name = ? AND version = ?{workspace}",
            (name, int(str(version))),
        ).fetchone()
    finally:
        connection.close()
    if row is None or row[2] == _DELETED_STAGE or not row[3]:
        return None
    return str(row[0]), str(row[1]), str(row[3])


def _optimizer_dir_of_model(model_dir: Path) -> Path | None:
    """The optimizer's folder inside a logged pyfunc, from its MLmodel file (as find_optimizer_dir)."""
    import yaml  # a dependency of mlflow, and a fraction of its import time

    mlmodel = model_dir / "MLmodel"
    if not mlmodel.is_file():
        return None
    with mlmodel.open() as handle:
        spec = yaml.safe_load(handle) or {}
    pyfunc = (spec.get("flavors") or {}).get("python_function") or {}
    entry = (pyfunc.get("artifacts") or {}).get(OPTIMIZER_ARTIFACT)
    if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
        return None
    directory = (model_dir / entry["path"]).resolve()
    if model_dir.resolve() not in directory.parents or not (directory / MANIFEST_NAME).is_file():
        return None
    return directory


def local_optimizer_dir(uri: str, store: Store | None = None) -> Path | None:
    """The optimizer folder a ``models:/`` URI names on a local SQLite registry, or None."""
    if os.environ.get(FAST_LOAD_ENV, "1") == "0":
        return None
    match = _MODEL_URI.match(uri)
    if match is None or match["name"].startswith("m-"):  # models:/m-<id> is a logged model, not a name
        return None
    registry_uri = registry_uri_cheaply(store)
    db = _sqlite_path(registry_uri) if registry_uri else None
    if db is None:
        return None
    try:
        row = _version_row(db, match["name"], match["alias"], match["version"])
    except (sqlite3.Error, ValueError):
        return None
    if row is None:
        return None
    _, status, location = row
    parsed = urlparse(location)
    if status != _READY or parsed.scheme != "file":
        return None
    return _optimizer_dir_of_model(Path(unquote(parsed.path)))
