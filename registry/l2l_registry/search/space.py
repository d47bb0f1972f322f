"""The recipe search's space, declared once: every knob a trial may change, its range, and how a
family's hints (``TaskFamily.meta_train_search_hints``) or a request's ``space`` narrow it.

The knobs are the ones BENCHMARKS.md found to decide success and to differ by family: the
preset (paper or l2l), the meta learning rate and its schedule, the output scale, the momentum
input features, the unroll length and meta-loss window, a horizon curriculum, the meta-batch
and gradient clipping. Categorical knobs take labels (Optuna stores str/int/float/None only);
``values`` turns a label into the config value it stands for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from l2l_plugin.errors import UsageError
from l2l_plugin.training.presets import deep_merge

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

Label = str | int | float | None


class SearchSpaceError(UsageError, ValueError):
    """A hint or ``space`` entry names an unknown knob or leaves the declared space."""

    def __init__(self, knob: str | None, message: str) -> None:
        super().__init__(f"{knob}: {message}" if knob else message)
        self.knob = knob
        self.detail = message


@dataclass(frozen=True)
class Knob:
    name: str
    path: tuple[str, ...]  # where the value goes in the meta-training overrides
    doc: str
    choices: tuple[Label, ...] = ()  # categorical when set
    values: Mapping[Label, Any] = field(default_factory=dict)  # label → config value (default: itself)
    low: float | None = None  # float range otherwise
    high: float | None = None
    log: bool = False

    @property
    def categorical(self) -> bool:
        return bool(self.choices)

    def value_of(self, label: Any) -> Any:
        return self.values.get(label, label) if self.categorical else label

    def suggest(self, trial: BaseTrial) -> Any:
        if self.categorical:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def narrowed(self, hint: Any) -> Knob:
        """This knob restricted by ``hint``: a value, ``{"choices": [...]}`` or ``{"low": a, "high": b}``."""
        if isinstance(hint, Mapping):
            unknown = set(hint) - {"choices", "low", "high"}
            if unknown:
                raise SearchSpaceError(self.name, f"unknown keys {sorted(unknown)}; use 'choices' or 'low'/'high'")
            if "choices" in hint:
                if set(hint) != {"choices"}:
                    raise SearchSpaceError(self.name, "give 'choices' or 'low'/'high', not both")
                return self._with_choices(hint["choices"])
            return self._with_range(hint.get("low", self.low), hint.get("high", self.high))
        return self._with_choices([hint])

    def _with_choices(self, choices: Any) -> Knob:
        if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
            raise SearchSpaceError(self.name, "'choices' must be a non-empty list")
        if self.categorical:
            outside = [c for c in choices if c not in self.choices]
            if outside:
                raise SearchSpaceError(self.name, f"{outside} not among the choices {list(self.choices)}")
            return replace(self, choices=tuple(dict.fromkeys(choices)))
        for value in choices:
            self._check_in_range(value)
        if len(choices) == 1:  # a fixed value: the range collapses to it
            return replace(self, low=float(choices[0]), high=float(choices[0]))
        return replace(self, choices=tuple(float(c) for c in dict.fromkeys(choices)), values={})

    def _with_range(self, low: Any, high: Any) -> Knob:
        if self.categorical:
            raise SearchSpaceError(self.name, f"is categorical: give 'choices' among {list(self.choices)}")
        self._check_in_range(low)
        self._check_in_range(high)
        if high < low:
            raise SearchSpaceError(self.name, f"high ({high}) is below low ({low})")
        return replace(self, low=float(low), high=float(high))

    def _check_in_range(self, value: Any) -> None:
        assert self.low is not None and self.high is not None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise SearchSpaceError(self.name, f"{value!r} is not a number")
        if not self.low <= value <= self.high:
            raise SearchSpaceError(self.name, f"{value} is outside the declared range [{self.low:g}, {self.high:g}]")

    def describe(self) -> str:
        if self.categorical:
            return f"one of {list(self.choices)}"
        return f"{'log-uniform' if self.log else 'uniform'} in [{self.low:g}, {self.high:g}]"


MOMENTUM_SETS: dict[Label, list[float]] = {
    "none": [],
    "0.9": [0.9],
    "rnnprop": [0.9, 0.5, 0.99],  # the l2l preset's
    "wide": [0.5, 0.9, 0.99, 0.999],
}


def declared_knobs(horizon: int) -> list[Knob]:
    """Every knob, for a family trained over ``horizon`` steps (unroll lengths must divide it)."""
    unrolls = [u for u in (10, 20, 50) if u < horizon and horizon % u == 0]
    return [
        Knob("preset", ("preset",), "the recipe beneath the other knobs", choices=("l2l", "paper")),
        Knob("meta_lr", ("meta_lr",), "Adam learning rate of the meta-optimizer", low=1e-4, high=3e-2, log=True),
        Knob("meta_lr_schedule", ("meta_lr_schedule",), "meta learning-rate schedule", choices=("cosine", "constant")),
        Knob("output_scale", ("network", "output_scale"), "multiplier of the LSTM's output", low=0.01, high=1.0, log=True),
        Knob(
            "momentum_decays",
            ("network", "momentum_decays"),
            "input features: m̂/√v̂ at these momentum decays",
            choices=tuple(MOMENTUM_SETS),
            values=MOMENTUM_SETS,
        ),
        Knob(
            "unroll_length",
            ("unroll_length",),
            "steps per truncated unroll ('full': one unroll over the horizon)",
            choices=("full", *unrolls),
            values={"full": None},
        ),
        Knob(
            "final_loss_steps",
            ("final_loss_steps",),
            "meta-loss on the last this-many steps ('all': every step)",
            choices=("all", 10, 20),
            values={"all": None},
        ),
        Knob(
            "horizon_curriculum",
            ("horizon_curriculum",),
            "'ramp': horizons H/4, H/2, H in turn (only with full unrolls)",
            choices=("none", "ramp"),
            values={"none": [], "ramp": [max(horizon // 4, 1), max(horizon // 2, 1), horizon]},
        ),
        Knob(
            "meta_loss_log_weight",
            ("meta_loss_log_weight",),
            "weight of mean log f in the per-step meta-loss (scale invariance)",
            choices=(0.0, 1.0),
        ),
        Knob("meta_batch_size", ("meta_batch_size",), "tasks per meta-gradient step", choices=(1, 2, 4, 8, 16)),
        Knob("grad_clip_norm", ("grad_clip_norm",), "clip of the meta-gradient's norm", choices=("none", 1.0), values={"none": None}),
    ]


def _is_set(overrides: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    node: Any = overrides
    for part in path:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


@dataclass(frozen=True)
class SearchSpace:
    knobs: tuple[Knob, ...]
    truncated: bool = False  # the user pinned a truncated unroll_length: no curriculum then

    @classmethod
    def build(
        cls,
        horizon: int,
        narrowing: Sequence[Mapping[str, Any]] = (),
        pinned: Mapping[str, Any] | None = None,
    ) -> SearchSpace:
        """The declared knobs, narrowed by each mapping of ``narrowing`` in turn (family hints,
        then the request's ``space``), without the knobs ``pinned`` (the user's overrides) sets."""
        knobs = {knob.name: knob for knob in declared_knobs(horizon)}
        for hints in narrowing:
            for name, hint in hints.items():
                if name not in knobs:
                    raise SearchSpaceError(name, f"not a knob of the search space; knobs: {', '.join(knobs)}")
                knobs[name] = knobs[name].narrowed(hint)
        pinned = pinned or {}
        truncated = pinned.get("unroll_length") is not None
        return cls(tuple(k for k in knobs.values() if not _is_set(pinned, k.path)), truncated)

    def suggest(self, trial: BaseTrial) -> dict[str, Any]:
        """The trial's labels, knob by knob (the curriculum only with full unrolls)."""
        labels: dict[str, Any] = {}
        for knob in self.knobs:
            unroll = labels.get("unroll_length", None if self.truncated else "full")
            if knob.name == "horizon_curriculum" and unroll != "full":
                continue  # truncations must divide every stage's horizon
            labels[knob.name] = knob.suggest(trial)
        return labels

    def overrides(self, labels: Mapping[str, Any]) -> dict[str, Any]:
        """Meta-training overrides for a trial's labels (nested like ``--meta``)."""
        by_name = {knob.name: knob for knob in self.knobs}
        result: dict[str, Any] = {}
        for name, label in labels.items():
            knob = by_name[name]
            node: dict[str, Any] = {}
            leaf = node
            for part in knob.path[:-1]:
                leaf = leaf.setdefault(part, {})
            leaf[knob.path[-1]] = knob.value_of(label)
            result = deep_merge(result, node)
        return result

    def describe(self) -> dict[str, str]:
        return {knob.name: knob.describe() for knob in self.knobs}
