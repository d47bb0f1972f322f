"""What is registered: families, their versions with metrics and tags, and the champion."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from l2l_plugin.optimizer.cost import CostProfile
from l2l_registry.conventions import (
    CHAMPION_ALIAS,
    EVAL_METRIC_PREFIX,
    MODEL_PREFIX,
    TAG_COST_PROFILE,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_SEARCH,
    family_of_model,
    model_name,
    version_uri,
)
from l2l_registry.errors import OptimizerNotFoundError, is_not_found
from l2l_registry.quiet import quiet
from l2l_registry.store import Store, client


@dataclass(frozen=True)
class VersionInfo:
    family: str
    version: str
    run_id: str | None
    created_ms: int
    champion: bool
    aliases: list[str]
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)  # the run's final evaluation (eval.*)

    @property
    def uri(self) -> str:
        return version_uri(self.family, self.version)

    @property
    def promotion(self) -> str | None:
        return self.tags.get(TAG_PROMOTION)

    @property
    def promotion_reason(self) -> str | None:
        return self.tags.get(TAG_PROMOTION_REASON)

    @property
    def search(self) -> dict[str, Any] | None:
        """The recipe search this version came from (its ``l2l.search`` tag), or None."""
        try:
            return json.loads(self.tags[TAG_SEARCH]) if TAG_SEARCH in self.tags else None
        except json.JSONDecodeError:
            return {}

    @property
    def cost_profile(self) -> dict[str, Any] | None:
        """The optimizer's cost profile (its ``l2l.cost_profile`` tag): step time and state size."""
        try:
            return json.loads(self.tags[TAG_COST_PROFILE]) if TAG_COST_PROFILE in self.tags else None
        except json.JSONDecodeError:
            return None

    def cost_label(self) -> str:
        """``812 ms@1e+06 (118x Adam), 320 B/param`` or ``-`` for versions made before profiles."""
        try:
            cost = CostProfile.model_validate(self.cost_profile or {})
        except ValidationError:  # no profile (an older version) or one this library cannot read
            return "-"
        return (
            f"{cost.step_ms:.4g} ms@{cost.parameters:.0e} ({cost.ratio_to_adam:.0f}x Adam), "
            f"{cost.state_bytes_per_parameter} B/param"
        )

    def search_label(self) -> str:
        """``-`` (no search), ``8 trials: searched`` or ``8 trials: defaults`` (nothing beat them)."""
        search = self.search
        if search is None:
            return "-"
        trials = search.get("trials")
        kept = "searched" if search.get("improved") else "defaults"
        return f"{trials} trials: {kept}" if trials is not None else kept

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "version": self.version,
            "uri": self.uri,
            "run_id": self.run_id,
            "created_ms": self.created_ms,
            "champion": self.champion,
            "aliases": self.aliases,
            "tags": self.tags,
            "metrics": self.metrics,
            "cost_profile": self.cost_profile,
        }


@dataclass(frozen=True)
class FamilyInfo:
    family: str
    model_name: str
    versions: int
    champion_version: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "model_name": self.model_name,
            "versions": self.versions,
            "champion_version": self.champion_version,
        }


@quiet
def list_families(store: Store | None = None) -> list[FamilyInfo]:
    """Every ``l2l-<family>`` registered model."""
    mlflow_client = client(store)
    out = []
    for model in mlflow_client.search_registered_models(f"name LIKE '{MODEL_PREFIX}%'"):
        family = family_of_model(model.name)
        if family is None:
            continue
        versions = mlflow_client.search_model_versions(f"name='{model.name}'")
        # Search results do not carry aliases in every store; the model itself does.
        champion = (mlflow_client.get_registered_model(model.name).aliases or {}).get(CHAMPION_ALIAS)
        out.append(FamilyInfo(family, model.name, len(versions), None if champion is None else str(champion)))
    return sorted(out, key=lambda info: info.family)


@quiet
def list_versions(family: str, store: Store | None = None, with_metrics: bool = True) -> list[VersionInfo]:
    """A family's versions, oldest first, with tags, the run's eval.* metrics and the champion flag."""
    from mlflow.exceptions import MlflowException

    mlflow_client = client(store)
    name = model_name(family)
    try:
        model = mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        raise OptimizerNotFoundError(
            f"no optimizer is registered for family {family!r} (model {name!r})"
        ) from None
    aliases_of: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases_of.setdefault(str(version), []).append(alias)
    out = []
    for mv in mlflow_client.search_model_versions(f"name='{name}'"):
        metrics: dict[str, float] = {}
        if with_metrics and mv.run_id:
            try:
                run_metrics = mlflow_client.get_run(mv.run_id).data.metrics
            except MlflowException:  # the run was deleted; the version still stands
                run_metrics = {}
            metrics = {k: v for k, v in run_metrics.items() if k.startswith(EVAL_METRIC_PREFIX)}
        version = str(mv.version)
        out.append(
            VersionInfo(
                family=family,
                version=version,
                run_id=mv.run_id,
                created_ms=int(mv.creation_timestamp or 0),
                champion=CHAMPION_ALIAS in aliases_of.get(version, []),
                aliases=sorted(aliases_of.get(version, [])),
                tags=dict(mv.tags or {}),
                metrics=metrics,
            )
        )
    return sorted(out, key=lambda info: int(info.version))


@quiet
def champion_version(family: str, store: Store | None = None) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client(store).get_model_version_by_alias(model_name(family), CHAMPION_ALIAS).version)
    except MlflowException as exc:
        if not is_not_found(exc):
            raise
        return None


def versions_json(versions: list[VersionInfo]) -> str:
    return json.dumps([v.as_dict() for v in versions], indent=2, default=str)
