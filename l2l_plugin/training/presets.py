"""Named meta-training recipes, and how a family's defaults and a user's overrides stack on them.

``paper`` is Andrychowicz et al. (2016) as published (MetaTrainConfig's own field defaults), kept
so its BENCHMARKS rows can be reproduced. ``l2l`` is the library's recipe for a family that names
none: the levers of later work that measurably helped on several families (BENCHMARKS.md, "The
library default recipe"): Adam-moment inputs at three timescales, a nominal step (Nesterov or
Adam, whichever tunes better) whose learning rate is tuned like a baseline's before meta-training
starts (so the untrained optimizer is the tuned hand-designed one), a learned correction and
magnitude on top, full-horizon unrolls with the meta-loss on the final steps, and weights picked
by the validation tasks' mean final loss.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel

PresetName = Literal["paper", "l2l"]

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "l2l": {
        "network": {
            "update": "nominal",
            "nominal": "nesterov",
            "momentum_decays": [0.9, 0.5, 0.99],
            "normalized_gradient": True,
        },
        "warm_start": "tuned_nominal",
        # One unroll per trajectory and a meta-loss on its last 20 steps: truncated sum-of-loss
        # unrolls made the warm-started optimizer worse at the final step (BENCHMARKS.md).
        "unroll_length": None,
        "final_loss_steps": 20,
        "validation_metric": "final_loss_mean",
        "meta_lr": 1e-3,
        "meta_lr_schedule": "cosine",
        "grad_clip_norm": 1.0,
        "validation_every": 25,
        # Weights are kept only when they beat the warm start on these tasks: 8 tasks let noise
        # pick worse weights on a heterogeneous family (BENCHMARKS.md, teacher_mlp).
        "validation_tasks": 32,
        "max_seconds": 1800,  # a family nobody tuned still gets an answer within 30 minutes
        "evaluation": {"tuning_tasks": 8, "lr_min": 1e-4, "lr_max": 10.0, "lr_points_per_decade": 3},
    },
}

#: The preset of a family that names none in its ``meta_train_defaults``.
LIBRARY_DEFAULT_PRESET: PresetName = "l2l"


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``, nested mappings merged; a new structure that shares nothing."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def with_preset(data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` over the values of the preset it names (``paper`` when it names none)."""
    name = data.get("preset", "paper")
    if name not in PRESETS:
        return dict(data)  # the field's own validation reports the unknown name
    return deep_merge(PRESETS[name], data)


def meta_train_recipe(family_defaults: Mapping[str, Any], overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The unvalidated meta-training config for a family: preset ← family defaults ← overrides.

    The preset is the user's ``preset``, else the family's, else :data:`LIBRARY_DEFAULT_PRESET`.
    A user who picks another preset than the family's gets that preset without the family's
    defaults (they were chosen for the family's own preset).
    """
    overrides = dict(overrides or {})
    family_preset = family_defaults.get("preset", LIBRARY_DEFAULT_PRESET)
    preset = overrides.get("preset", family_preset)
    base = family_defaults if preset == family_preset else {}
    return deep_merge(base, {**overrides, "preset": preset})
