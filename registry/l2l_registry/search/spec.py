"""What a recipe search is asked to do: ``--search trials=N,budget=SECONDS`` or ``"search": {...}``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from l2l_plugin.errors import UsageError


class SearchSpec(BaseModel):
    """A recipe search: trials, budgets, pruning; where the study lives is the caller's choice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(8, ge=1, le=1000, description="Trials in the study (the defaults' trial included).")
    budget: float = Field(
        600.0,
        gt=0,
        le=7 * 24 * 3600,
        description="Wall-clock seconds for all trials together; no trial starts after it, and a "
        "running one stops at it. The winning recipe's full training comes after, on its own budget.",
    )
    trial_seconds: float | None = Field(
        None, gt=0, description="Meta-training seconds of one trial; null: budget / trials."
    )
    trial_iterations: int | None = Field(
        None, ge=1, le=10_000_000, description="Meta-iterations of one trial at most; null: the recipe's own."
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="Optuna pruner stopping trials whose validation losses lag behind."
    )
    startup_trials: int = Field(
        2, ge=0, le=1000, description="Trials that finish before pruning (and TPE sampling) starts."
    )
    metric: Literal["final_loss_mean", "final_loss_geomean", "tail_loss_mean"] = Field(
        "final_loss_mean",
        description="What scores a trial on the validation tasks (every trial the same way; lower is better).",
    )
    seed: int = Field(0, ge=0, lt=2**31, description="Seeds the sampler (TPE).")
    space: dict[str, Any] = Field(
        default_factory=dict,
        description="Narrows the declared search space (on top of the family's hints): knob → value, "
        '{"choices": [...]} or {"low": a, "high": b}.',
    )

    @model_validator(mode="after")
    def _trial_fits(self) -> SearchSpec:
        if self.trial_seconds is not None and self.trial_seconds > self.budget:
            raise ValueError(f"trial_seconds ({self.trial_seconds:g}) exceeds the search budget ({self.budget:g})")
        return self

    @property
    def seconds_per_trial(self) -> float:
        return self.trial_seconds if self.trial_seconds is not None else self.budget / self.trials


def parse_search(text: str) -> dict[str, Any]:
    """``"trials=8,budget=600,pruner=none"`` → a dict (values as JSON when they parse)."""
    import json

    result: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected key=value in --search, got {item!r}")
        try:
            result[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            result[key.strip()] = raw
    return result
