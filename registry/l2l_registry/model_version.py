"""What a published model version holds besides the optimizer: its tags, its description, the
pyfunc's requirements, and the result a publisher gets back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path

from l2l_plugin.evaluation import EvaluationReport
from l2l_plugin.evaluation.report import LEARNED
from l2l_plugin.pipeline import MetaTrainOutcome
from l2l_plugin.text import clip
from l2l_registry.conventions import (
    CHAMPION_ALIAS,
    MAX_TAG_LENGTH,
    PROMOTION_PROMOTED,
    PROMOTION_REJECTED,
    TAG_BEATS_BASELINES,
    TAG_CHAMPION_COMPARISON,
    TAG_COST_PROFILE,
    TAG_EVALUATION,
    TAG_FAMILY,
    TAG_FAMILY_CONFIG,
    TAG_FAMILY_CONFIG_HASH,
    TAG_GIT_COMMIT,
    TAG_LIBRARY_VERSION,
    TAG_PROMOTION,
    TAG_PROMOTION_REASON,
    TAG_SEARCH,
    alias_uri,
    canonical_json,
    config_hash,
    version_uri,
)
from l2l_registry.gate import ChampionComparison, GateDecision

MODEL_CODE = Path(__file__).with_name("model_code.py")  # the pyfunc, logged as models-from-code


@dataclass(frozen=True)
class PublishResult:
    family: str
    model_name: str
    version: str
    run_id: str
    promoted: bool
    reason: str
    comparison: ChampionComparison | None
    report: EvaluationReport

    @property
    def version_uri(self) -> str:
        return version_uri(self.family, self.version)

    @property
    def champion_uri(self) -> str:
        return alias_uri(self.family, CHAMPION_ALIAS)


def pip_requirements() -> list[str]:
    """Given explicitly so that log_model does not spend seconds inferring them."""
    import mlflow
    import torch

    requirements = []
    for dist in ("l2l-registry", "l2l-plugin"):
        try:
            requirements.append(f"{dist}=={dist_version(dist)}")
        except PackageNotFoundError:
            requirements.append(dist)
    requirements += [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}"]
    return requirements


def version_tags(outcome: MetaTrainOutcome, decision: GateDecision) -> dict[str, str]:
    manifest = outcome.trained.manifest
    tags = {
        TAG_FAMILY: manifest.family,
        TAG_FAMILY_CONFIG: clip(canonical_json(manifest.family_config), MAX_TAG_LENGTH),
        TAG_FAMILY_CONFIG_HASH: config_hash(manifest.family_config),
        TAG_LIBRARY_VERSION: manifest.provenance.library_version,
        TAG_GIT_COMMIT: manifest.provenance.git_commit or "unknown",
        TAG_EVALUATION: clip(json.dumps(outcome.report.summary(), sort_keys=True), MAX_TAG_LENGTH),
        TAG_BEATS_BASELINES: str(outcome.report.beats_every_baseline).lower(),
        TAG_PROMOTION: PROMOTION_PROMOTED if decision.promote else PROMOTION_REJECTED,
        TAG_PROMOTION_REASON: clip(decision.reason, MAX_TAG_LENGTH),
    }
    if decision.comparison is not None:
        tags[TAG_CHAMPION_COMPARISON] = json.dumps(decision.comparison.as_dict(), sort_keys=True)
    if manifest.cost_profile is not None:
        tags[TAG_COST_PROFILE] = manifest.cost_profile.model_dump_json()
    search = getattr(manifest.provenance, "search", None)  # a recipe search's summary (l2l_registry.search)
    if search:
        from l2l_registry.search.run import search_tag

        tags[TAG_SEARCH] = search_tag(search)
    return tags


def describe(report: EvaluationReport) -> str:
    """The version's description: how it did against the best tuned baseline."""
    learned, best = report.optimizers[LEARNED], report.optimizers[report.best_baseline]
    return (
        f"LSTM optimizer meta-trained on {report.family}. On {len(report.test_seeds)} held-out instances, "
        f"{report.steps} steps: final loss mean {learned.final_loss_mean:.4g} (best tuned baseline "
        f"{report.best_baseline}: {best.final_loss_mean:.4g}), geomean {learned.final_loss_geomean:.4g} "
        f"({best.final_loss_geomean:.4g}), win rate {report.win_rate_vs_best_baseline:.0%}."
    )
