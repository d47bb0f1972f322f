"""Where MLflow keeps runs, artifacts and the registry.

Resolution order, for tracking and registry alike:

1. URIs passed explicitly to :func:`configure`;
2. what the process already chose: ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` or an
   earlier ``mlflow.set_tracking_uri`` — a real ``mlflow server`` is used this way;
3. the embedded default: a SQLite file and an artifact folder under one data directory,
   ``$L2L_MLFLOW_DIR``, else ``mlflow`` in the user's data folder (:func:`l2l_plugin.paths.user_data_dir`:
   ``$XDG_DATA_HOME/l2l-plugin``, else ``~/.local/share/l2l-plugin`` on Linux). Nothing depends
   on the working directory.

:func:`configure` applies the result to mlflow's process-wide settings, because
``mlflow.pyfunc.log_model`` and ``models:/`` resolution read those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from l2l_plugin.paths import user_data_dir

DATA_DIR_ENV = "L2L_MLFLOW_DIR"
DB_NAME = "mlflow.db"
ARTIFACTS_NAME = "artifacts"

# The URI we set ourselves for the embedded store: a later configure() must not mistake it for
# a user's choice (the data directory may have changed since, e.g. between tests).
_applied_default: str | None = None


def default_data_dir() -> Path:
    """The embedded store's directory (not created here)."""
    if explicit := os.environ.get(DATA_DIR_ENV):
        return Path(explicit).expanduser().resolve()
    return (user_data_dir() / "mlflow").resolve()


@dataclass(frozen=True)
class Store:
    tracking_uri: str
    registry_uri: str
    # Set for the embedded store only: new experiments put their artifacts here. With a server,
    # the server decides (proxied artifacts), so it stays None.
    artifact_root: Path | None = None

    @property
    def embedded(self) -> bool:
        return self.artifact_root is not None

    def describe(self) -> str:
        if self.embedded:
            return f"embedded MLflow store {self.tracking_uri} (artifacts under {self.artifact_root})"
        if self.registry_uri != self.tracking_uri:
            return f"MLflow at {self.tracking_uri} (registry {self.registry_uri})"
        return f"MLflow at {self.tracking_uri}"


def embedded_store(data_dir: Path | None = None) -> Store:
    directory = (data_dir or default_data_dir()).resolve()
    uri = f"sqlite:///{directory / DB_NAME}"
    return Store(tracking_uri=uri, registry_uri=uri, artifact_root=directory / ARTIFACTS_NAME)


def _user_tracking_uri() -> str | None:
    import mlflow
    from mlflow.environment_variables import MLFLOW_TRACKING_URI

    # mlflow.get_tracking_uri(): set_tracking_uri's URI, else the environment variable (else
    # mlflow's own default, which is not a choice: is_tracking_uri_set() is False then). The
    # default we applied earlier in this process is not the user's: a changed environment
    # variable must still win over it.
    if mlflow.tracking.is_tracking_uri_set() and (uri := mlflow.get_tracking_uri()) != _applied_default:
        return str(uri)
    if (uri := MLFLOW_TRACKING_URI.get()) and uri != _applied_default:
        return str(uri)
    return None


def _user_registry_uri() -> str | None:
    from mlflow.environment_variables import MLFLOW_REGISTRY_URI
    from mlflow.tracking._model_registry import utils

    # No public way to tell a registry URI someone set from one mlflow.get_registry_uri()
    # derives from the tracking URI (the derived one must not count as a choice), hence the
    # module attribute that set_registry_uri writes.
    for uri in (utils._registry_uri, MLFLOW_REGISTRY_URI.get()):
        if uri and uri != _applied_default:
            return str(uri)
    return None


def resolve_store(tracking_uri: str | None = None, registry_uri: str | None = None) -> Store:
    """Which store to use, without changing anything."""
    tracking = tracking_uri or _user_tracking_uri()
    if tracking is None:
        default = embedded_store()
        if registry_uri or (registry_uri := _user_registry_uri()):
            return Store(default.tracking_uri, registry_uri, default.artifact_root)
        return default
    return Store(tracking, registry_uri or _user_registry_uri() or tracking)


def configure(tracking_uri: str | None = None, registry_uri: str | None = None) -> Store:
    """Resolve the store, create the embedded one's directory, and point mlflow at it."""
    global _applied_default
    import mlflow

    store = resolve_store(tracking_uri, registry_uri)
    if store.embedded:
        assert store.artifact_root is not None
        store.artifact_root.mkdir(parents=True, exist_ok=True)
        _applied_default = store.tracking_uri
    mlflow.set_tracking_uri(store.tracking_uri)
    # Left unset when equal: mlflow then follows the tracking URI, and a later change of
    # MLFLOW_TRACKING_URI is not shadowed by a registry URI we pinned.
    if store.registry_uri != store.tracking_uri:
        mlflow.set_registry_uri(store.registry_uri)
    return store


def client(store: Store | None = None):  # -> mlflow.MlflowClient (mlflow imported lazily)
    from mlflow import MlflowClient

    from l2l_registry.quiet import quiet_third_party

    store = store or configure()
    with quiet_third_party():  # opening the SQL store is what warns (l2l_registry.quiet)
        return MlflowClient(tracking_uri=store.tracking_uri, registry_uri=store.registry_uri)
