"""What a recipe search found: each trial's summary and the outcome the training, the manifest
and the job result keep."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialSummary:
    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING
    value: float | None
    defaults: bool
    labels: dict[str, Any]


@dataclass(frozen=True)
class SearchOutcome:
    study_name: str
    overrides: dict[str, Any]  # the winning recipe (the defaults' own overrides when not improved)
    train_overrides: dict[str, Any]  # what the full training runs with: the recipe, its warm start reused
    improved: bool  # a searched recipe beat the defaults on the validation tasks
    best_trial: int | None
    best_value: float | None
    default_value: float | None  # the defaults' trial's score (None: it did not complete)
    labels: dict[str, Any]  # the winner's knob labels ({} for the defaults)
    trials: list[TrialSummary] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state.lower()] = counts.get(trial.state.lower(), 0) + 1
        return counts

    def message(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(self.counts.items()))
        head = f"search {self.study_name}: {len(self.trials)} trials ({counts})"
        if self.improved:
            return (
                f"{head}; trial {self.best_trial} scored {self.best_value:.4g} on the validation tasks "
                f"against the defaults' {_fmt(self.default_value)}: training its recipe"
            )
        return f"{head}; nothing better than the defaults ({_fmt(self.default_value)}): training the defaults"

    def as_dict(self) -> dict[str, Any]:
        """What the manifest, the version's tag and the job result keep."""
        return {
            "study": self.study_name,
            "trials": len(self.trials),
            "states": self.counts,
            "improved": self.improved,
            "best_trial": self.best_trial,
            "best_value": self.best_value,
            "default_value": self.default_value,
            "labels": self.labels,
            "recipe": self.overrides,
            "seconds": round(self.seconds, 1),
            "message": self.message(),
        }


def _fmt(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.4g}"
