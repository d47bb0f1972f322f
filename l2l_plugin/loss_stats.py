"""How final losses are summarised and compared, the one rule for evaluation, the promotion
gate and validation (dependency-free: every layer imports it)."""

from __future__ import annotations

import math

import torch

GEOMEAN_FLOOR = 1e-300  # a loss of exactly 0 counts as this, so one solved instance is not -inf


def geometric_mean(values: torch.Tensor) -> float:
    """The geometric mean of losses: ``inf`` as soon as one value is not finite (NaN or ±inf: a
    diverged instance ranks last), values floored at :data:`GEOMEAN_FLOOR`."""
    if not bool(torch.isfinite(values).all()):
        return math.inf
    return float(torch.exp(torch.log(values.double().clamp_min(GEOMEAN_FLOOR)).mean()))


def beats(mean: float, geomean: float, other_mean: float, other_geomean: float) -> bool:
    """One optimizer's final losses against another's on the same instances: a strictly lower
    mean AND a strictly lower geometric mean. Mean alone rewards one lucky outlier, the
    geometric mean alone ignores blow-ups; the losses are heavy-tailed, so both."""
    return mean < other_mean and geomean < other_geomean
