"""``load_optimizer``: a registered (or local) optimizer as a ``torch.optim.Optimizer``.

Accepted locations:

- ``models:/l2l-<family>@champion`` (any alias), ``models:/l2l-<family>/<version>``;
- ``runs:/<run_id>/model`` (the pyfunc) or ``runs:/<run_id>/optimizer`` (the bare files);
- a local directory: an optimizer's files (``optimizer.json``), a downloaded MLflow model
  (``MLmodel``), or a ``l2l meta-train --out`` directory.

Only the optimizer's JSON and safetensors files are read: no pickle, no code from the store.
On a SQLite registry with local artifacts (the embedded store) ``models:/`` URIs are resolved
without importing MLflow (``l2l_registry.local_store``); everything else goes through MLflow.
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from l2l_plugin import LearnedOptimizer, TrainedOptimizer, load_trained_optimizer
from l2l_plugin.artifacts import MANIFEST_NAME, WEIGHTS_NAME
from l2l_registry.conventions import MODEL_PREFIX, OPTIMIZER_ARTIFACT
from l2l_registry.errors import FamilyMismatchWarning, OptimizerNotFoundError, RegistryError, is_not_found
from l2l_registry.local_store import local_optimizer_dir
from l2l_registry.quiet import quiet
from l2l_registry.store import Store, client, configure

_PROGRESS_BAR_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextmanager
def _quiet_download() -> Iterator[None]:
    """No progress bar for a few small files inside someone's training job (unless they asked)."""
    if _PROGRESS_BAR_ENV in os.environ:
        yield
        return
    os.environ[_PROGRESS_BAR_ENV] = "false"
    try:
        yield
    finally:
        os.environ.pop(_PROGRESS_BAR_ENV, None)


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?(?:/.*)?$")


def _confined(root: Path, candidate: Path) -> Path:
    """``candidate`` if it and the optimizer's files in it stay inside ``root`` (no ``..``, no
    symlink out): a downloaded or registry folder is someone else's, and must not make the loader
    read files elsewhere on this machine."""
    base = root.resolve()
    for path in (candidate, candidate / MANIFEST_NAME, candidate / WEIGHTS_NAME):
        resolved = path.resolve()
        if resolved != base and base not in resolved.parents:
            raise RegistryError(f"{path} points outside the model folder {root}; refusing to read it")
    return candidate


def find_optimizer_dir(directory: Path) -> Path:
    """The folder holding ``optimizer.json`` inside any of the accepted local layouts."""
    if (directory / MANIFEST_NAME).is_file():
        return _confined(directory, directory)
    if (directory / "MLmodel").is_file():
        from mlflow.models import Model

        flavor = Model.load(str(directory)).flavors.get("python_function", {})
        entry = flavor.get("artifacts", {}).get(OPTIMIZER_ARTIFACT)
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            candidate = _confined(directory, directory / entry["path"])
            if (candidate / MANIFEST_NAME).is_file():
                return candidate
    if (directory / OPTIMIZER_ARTIFACT / MANIFEST_NAME).is_file():
        return _confined(directory, directory / OPTIMIZER_ARTIFACT)
    raise OptimizerNotFoundError(
        f"{directory} holds no trained optimizer (looked for {MANIFEST_NAME}, an MLflow model with an "
        f"'{OPTIMIZER_ARTIFACT}' artifact, and {OPTIMIZER_ARTIFACT}/{MANIFEST_NAME})"
    )


def _registered_names(mlflow_client: Any) -> list[str]:
    try:
        return sorted(m.name for m in mlflow_client.search_registered_models(f"name LIKE '{MODEL_PREFIX}%'"))
    except Exception:  # only used to make an error message more helpful
        return []


@quiet
def check_model_uri(uri: str, store: Store | None = None) -> None:
    """Raise :class:`OptimizerNotFoundError` (naming what exists) if a ``models:/`` URI points nowhere."""
    match = _MODELS_URI.match(uri)
    if not match or match["name"].startswith("m-"):  # models:/m-<id> is a logged model, not a name
        return
    from mlflow.exceptions import MlflowException

    mlflow_client = client(store)
    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        known = _registered_names(mlflow_client)
        raise OptimizerNotFoundError(
            f"no registered model {name!r} in {(store or configure()).describe()}; "
            + (f"registered optimizers: {', '.join(known)}" if known else "no optimizer is registered yet")
            + " (publish one with `l2l meta-train FAMILY --register`)"
        ) from None
    versions = sorted(
        (str(mv.version) for mv in mlflow_client.search_model_versions(f"name='{name}'")), key=int
    )
    if alias is not None and alias not in (model.aliases or {}):
        aliases = ", ".join(f"{a} → {v}" for a, v in sorted((model.aliases or {}).items())) or "none"
        raise OptimizerNotFoundError(
            f"model {name!r} has no alias {alias!r} "
            f"(aliases: {aliases}; versions: {', '.join(versions) or 'none'}). "
            f"No version has been promoted: see `l2l optimizers` and `l2l promote`."
        )
    if version is not None and version not in versions:
        raise OptimizerNotFoundError(
            f"model {name!r} has no version {version!r} (versions: {', '.join(versions) or 'none'})"
        )


@quiet
def load_trained(location: str | Path, *, store: Store | None = None) -> TrainedOptimizer:
    """The optimizer's manifest and network from a URI or local directory (see module doc)."""
    text = str(location)
    parsed = urlparse(text)
    if parsed.scheme in ("", "file") or len(parsed.scheme) == 1:  # a path (or a Windows drive)
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else text).expanduser()
        if not path.is_dir():
            raise OptimizerNotFoundError(f"{path} is not a directory")
        return load_trained_optimizer(find_optimizer_dir(path))
    if parsed.scheme not in ("models", "runs"):
        raise RegistryError(
            f"unsupported optimizer location {text!r}: use models:/, runs:/ or a local directory"
        )

    if parsed.scheme == "models" and (local := local_optimizer_dir(text, store)) is not None:
        return load_trained_optimizer(local)

    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    store = store or configure()
    check_model_uri(text, store)
    with tempfile.TemporaryDirectory(prefix="l2l-optimizer-") as tmp, _quiet_download():
        try:
            local = download_artifacts(
                artifact_uri=text,
                dst_path=tmp,
                tracking_uri=store.tracking_uri,
                registry_uri=store.registry_uri,
            )
        except MlflowException as exc:
            if is_not_found(exc):
                raise OptimizerNotFoundError(f"{text}: {exc.message}") from None
            raise
        # Loaded into memory (weights copied into the network), so the download can go.
        return load_trained_optimizer(find_optimizer_dir(Path(local)))


def warn_if_other_family(trained: TrainedOptimizer, family: str | None) -> None:
    if family is not None and family != trained.manifest.family:
        warnings.warn(
            f"this optimizer was meta-trained on family {trained.manifest.family!r} and is being used for a "
            f"{family!r} model: it is coordinatewise so it runs, but it was not trained for this problem",
            FamilyMismatchWarning,
            stacklevel=3,
        )


def load_optimizer(
    location: str | Path,
    params: Iterable[Any],
    lr: float = 1.0,
    *,
    family: str | None = None,
    store: Store | None = None,
) -> LearnedOptimizer:
    """A ``LearnedOptimizer`` over ``params`` from a registry URI or a local directory.

    ``family`` names the family of the model being trained, when known: an optimizer
    meta-trained on another family still works (it is coordinatewise) but warns.
    """
    trained = load_trained(location, store=store)
    warn_if_other_family(trained, family)
    return LearnedOptimizer(params, trained, lr=lr)
