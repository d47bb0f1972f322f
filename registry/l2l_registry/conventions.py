"""Names shared by publishing, the promotion gate, listing and loading."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

MODEL_PREFIX = "l2l-"
CHAMPION_ALIAS = "champion"
MODEL_ARTIFACT_NAME = "model"  # the pyfunc inside each run (runs:/<run_id>/model)
OPTIMIZER_ARTIFACT = "optimizer"  # the optimizer's files, in the run and inside the pyfunc
MAX_TAG_LENGTH = 5000  # MLflow limits tag values; the full data is in the run's artifacts

# Tags on a model version (and, where it makes sense, on its run).
TAG_FAMILY = "l2l.family"
TAG_FAMILY_CONFIG = "l2l.family_config"
TAG_FAMILY_CONFIG_HASH = "l2l.family_config_hash"
TAG_LIBRARY_VERSION = "l2l.library_version"
TAG_GIT_COMMIT = "l2l.git_commit"
TAG_EVALUATION = "l2l.evaluation"  # JSON: EvaluationReport.summary()
TAG_BEATS_BASELINES = "l2l.beats_every_baseline"
TAG_PROMOTION = "l2l.promotion"  # one of the PROMOTION_* values
TAG_PROMOTION_REASON = "l2l.promotion_reason"
TAG_CHAMPION_COMPARISON = "l2l.champion_comparison"  # JSON: both optimizers on the same instances
TAG_FORCED_PROMOTION = "l2l.forced_promotion"  # JSON: who, when, previous champion, why
TAG_REGISTERED_VERSION = "l2l.registered_version"  # on the run
# On the run while it goes: the phase (meta-training, evaluating, publishing; the last one it
# entered once it has ended), evaluation progress ("2/5" optimizers), and why meta-training
# stopped (completed, time budget, cancelled, diverged, failed, interrupted).
TAG_PHASE = "l2l.phase"
TAG_PHASE_PROGRESS = "l2l.phase_progress"
TAG_STOP_REASON = "l2l.stop_reason"
# A version (and run) from a recipe search (l2l meta-train --search): its summary as JSON, with
# the winning recipe, whether it beat the defaults, and the study's trials.
TAG_SEARCH = "l2l.search"
# JSON: the optimizer's CostProfile (step time at 10⁶ parameters beside Adam, state bytes per parameter).
TAG_COST_PROFILE = "l2l.cost_profile"

PROMOTION_PROMOTED = "promoted"  # by the gate (whether it is still champion: see the alias)
PROMOTION_REJECTED = "not promoted"
PROMOTION_FORCED = "forced"

# Run metrics: meta-training over time, then the final evaluation.
METRIC_META_LOSS = "meta_loss"
METRIC_VALIDATION_LOSS = "validation_loss"
METRIC_BEST_VALIDATION_LOSS = "best_validation_loss"
METRIC_SKIPPED = "skipped_nonfinite"
EVAL_METRIC_PREFIX = "eval."


def model_name(family: str) -> str:
    """The registered model holding every version meta-trained on ``family``."""
    return f"{MODEL_PREFIX}{family}"


def family_of_model(name: str) -> str | None:
    return name[len(MODEL_PREFIX) :] if name.startswith(MODEL_PREFIX) else None


def version_uri(family: str, version: str | int) -> str:
    """One model version of ``family``'s model: ``models:/l2l-<family>/<version>``."""
    return f"models:/{model_name(family)}/{version}"


def alias_uri(family: str, alias: str) -> str:
    """The version an alias of ``family``'s model points at: ``models:/l2l-<family>@<alias>``."""
    return f"models:/{model_name(family)}@{alias}"


def champion_uri(family: str) -> str:
    """What a training job passes to ``load_optimizer``."""
    return alias_uri(family, CHAMPION_ALIAS)


def run_optimizer_uri(run_id: str) -> str:
    """The optimizer files a run logged without a model version (``load_optimizer`` takes it)."""
    return f"runs:/{run_id}/{OPTIMIZER_ARTIFACT}"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def config_hash(config: Mapping[str, Any]) -> str:
    """Stable across key order: two runs on the same family config share it."""
    return hashlib.sha256(canonical_json(dict(config)).encode()).hexdigest()
