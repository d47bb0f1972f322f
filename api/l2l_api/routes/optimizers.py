"""GET /optimizers...: registered versions, one version's metadata and models:/ URI, its files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import APIRouter, Depends, Path, Response

from l2l_api import registry_adapter
from l2l_api.deps import run_placement, settings
from l2l_api.run_creation import RunPlacement
from l2l_api.schemas import (
    NAME_PATTERN,
    VERSION_PATTERN,
    ErrorOut,
    OptimizerDetailOut,
    OptimizerFamilyOut,
    OptimizerVersionsOut,
    VersionOut,
)
from l2l_api.service_errors import MlflowUnavailable, VersionNotFound
from l2l_api.settings import Settings
from l2l_plugin.errors import L2LError
from l2l_registry import VersionInfo, list_families, list_versions, model_name
from l2l_registry.conventions import alias_uri, champion_uri

router = APIRouter(prefix="/optimizers", tags=["optimizers"])

Family = Path(pattern=NAME_PATTERN, description="A family name (the model is l2l-<family>).")
Ref = Path(pattern=VERSION_PATTERN, description="A version number, an alias such as `champion`, or `latest`.")
_NOT_FOUND = {404: {"model": ErrorOut, "description": "No such registered model, version or alias."}}
_UNAVAILABLE = {
    503: {"model": ErrorOut, "description": "MLflow is unreachable or did not answer in time (Retry-After)."}
}
_BAD_REF = {400: {"model": ErrorOut, "description": "The registry refused the name or reference."}}
RETRY_AFTER_SECONDS = 30


@contextmanager
def registry_errors(runs: RunPlacement) -> Iterator[None]:
    """MLflow's own exceptions as the service's errors: not there (404) or unreachable (503),
    never a traceback. The registry's errors (L2LError) pass as they are. An unreachable MLflow
    is also news for POST: it creates jobs' runs itself until one is created."""
    from mlflow.exceptions import MlflowException

    from l2l_registry.errors import is_not_found

    try:
        yield
    except registry_adapter.MlflowTimeout:
        runs.mlflow_failed()
        raise
    except L2LError:
        raise
    except MlflowException as exc:
        if is_not_found(exc):
            raise VersionNotFound(exc.message) from None
        runs.mlflow_failed()
        raise MlflowUnavailable(f"MLflow error: {exc.error_code}", RETRY_AFTER_SECONDS) from None
    except OSError as exc:  # includes the requests library's connection errors
        runs.mlflow_failed()
        raise MlflowUnavailable(f"MLflow is unreachable: {type(exc).__name__}", RETRY_AFTER_SECONDS) from None


def version_out(info: VersionInfo, metrics: dict[str, float] | None = None) -> VersionOut:
    return VersionOut(
        family=info.family,
        version=info.version,
        uri=info.uri,
        run_id=info.run_id,
        created_ms=info.created_ms,
        champion=info.champion,
        aliases=info.aliases,
        promotion=info.promotion,
        promotion_reason=info.promotion_reason,
        tags=info.tags,
        metrics=dict(info.metrics if metrics is None else metrics),
        cost_profile=info.cost_profile,
    )


def resolve_version(family: str, ref: str, timeout: float, runs: RunPlacement) -> VersionInfo:
    """``ref`` as a version number, ``latest``, or an alias (404 naming what exists)."""
    with registry_errors(runs):
        versions = registry_adapter.bounded(timeout, list_versions, family, with_metrics=False)
    if not versions:
        raise VersionNotFound(f"{model_name(family)} has no versions")
    if ref == "latest":
        return max(versions, key=lambda info: int(info.version))
    if ref.isdigit():
        found = [info for info in versions if int(info.version) == int(ref)]
    else:
        found = [info for info in versions if ref in info.aliases]
    if not found:
        aliases = sorted({alias for info in versions for alias in info.aliases})
        raise VersionNotFound(
            f"{model_name(family)} has no version or alias {ref!r} (versions: "
            f"{', '.join(info.version for info in versions)}; aliases: {', '.join(aliases) or 'none'})",
        )
    return found[0]


@router.get(
    "",
    response_model=list[OptimizerFamilyOut],
    responses={**_BAD_REF, **_UNAVAILABLE},
    summary="Families with a registered optimizer",
)
def list_registered(
    config: Settings = Depends(settings), runs: RunPlacement = Depends(run_placement)
) -> list[OptimizerFamilyOut]:
    with registry_errors(runs):
        families = registry_adapter.bounded(config.mlflow_request_timeout_seconds, list_families)
    return [OptimizerFamilyOut(**info.as_dict()) for info in families]


@router.get(
    "/{family}",
    response_model=OptimizerVersionsOut,
    responses={**_BAD_REF, **_NOT_FOUND, **_UNAVAILABLE},
    summary="A family's registered versions, with metrics, and its champion",
)
def family_versions(
    family: str = Family, config: Settings = Depends(settings), runs: RunPlacement = Depends(run_placement)
) -> OptimizerVersionsOut:
    with registry_errors(runs):
        versions = registry_adapter.bounded(config.mlflow_request_timeout_seconds, list_versions, family)
    champion = next((info.version for info in versions if info.champion), None)
    return OptimizerVersionsOut(
        family=family,
        model_name=model_name(family),
        champion=champion,
        champion_uri=champion_uri(family) if champion else None,
        versions=[version_out(info) for info in versions],
    )


@router.get(
    "/{family}/{ref}",
    response_model=OptimizerDetailOut,
    responses={**_BAD_REF, **_NOT_FOUND, **_UNAVAILABLE},
    summary="One version: metadata and the models:/ URI a pipeline loads",
)
def version_detail(
    family: str = Family,
    ref: str = Ref,
    config: Settings = Depends(settings),
    runs: RunPlacement = Depends(run_placement),
) -> OptimizerDetailOut:
    timeout = config.mlflow_request_timeout_seconds
    info = resolve_version(family, ref, timeout, runs)
    with registry_errors(runs):
        files = registry_adapter.bounded(timeout, registry_adapter.optimizer_files, family, info.version)
        run_metrics = registry_adapter.bounded(timeout, registry_adapter.run_metrics, info.run_id)
        metrics = {k: v for k, v in run_metrics.items() if k.startswith("eval.")}
    # An alias is what a pipeline should load: it follows promotions. A number pins one version.
    load_uri = info.uri if ref.isdigit() or ref == "latest" else alias_uri(family, ref)
    return OptimizerDetailOut(
        **version_out(info, metrics).model_dump(),
        requested=ref,
        load_uri=load_uri,
        load_example=f"from l2l_registry import load_optimizer\n"
        f"optimizer = load_optimizer({load_uri!r}, model.parameters())",
        files_url=f"/optimizers/{family}/{info.version}/files",
        manifest=registry_adapter.manifest_of(files),
    )


@router.get(
    "/{family}/{ref}/files",
    response_class=Response,
    responses={
        200: {"content": {"application/zip": {}}, "description": "optimizer.json and weights.safetensors"},
        **_BAD_REF,
        **_NOT_FOUND,
        **_UNAVAILABLE,
    },
    summary="The optimizer's files as a zip (for jobs that cannot reach MLflow)",
)
def version_files(
    family: str = Family,
    ref: str = Ref,
    config: Settings = Depends(settings),
    runs: RunPlacement = Depends(run_placement),
) -> Response:
    """Unzip into a folder and pass the folder to `load_optimizer` (no MLflow needed)."""
    timeout = config.mlflow_request_timeout_seconds
    info = resolve_version(family, ref, timeout, runs)
    with registry_errors(runs):
        files = registry_adapter.bounded(timeout, registry_adapter.optimizer_files, family, info.version)
    name = f"{model_name(family)}-v{info.version}.zip"
    return Response(
        registry_adapter.zip_files(files),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
