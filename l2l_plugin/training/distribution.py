"""Meta-training on a distribution of a family's configs, and random scaling of the optimizee.

Both widen what the optimizer sees during meta-training, so it does not overfit one network
shape or one gradient scale: each trajectory draws its own family config (activation, width,
depth, …) and, optionally, rescales every coordinate of its tasks, θ = s ⊙ φ with
log s ~ U(−c, c) (Lv et al. 2017, RNNprop).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator

from l2l_plugin.families import Params, TaskFamily, TaskStack, seeded_generator


class Choice(BaseModel):
    """One of ``choices``, uniformly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    choices: tuple[JsonValue, ...] = Field(
        min_length=1, max_length=1000, description="The values a trajectory may draw, each as likely."
    )


class Range(BaseModel):
    """Uniform on [low, high] (log-uniform when ``log``; whole numbers when ``integer``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float = Field(allow_inf_nan=False, description="Smallest value drawn.")
    high: float = Field(allow_inf_nan=False, description="Largest value drawn.")
    log: bool = Field(False, description="Uniform in log space (low must be > 0).")
    integer: bool = Field(False, description="Whole numbers only (for integer fields).")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) is below low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


FieldDistribution = Choice | Range


def _draw(distribution: FieldDistribution, generator: torch.Generator) -> Any:
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if isinstance(distribution, Choice):
        return distribution.choices[min(int(u * len(distribution.choices)), len(distribution.choices) - 1)]
    if distribution.integer:
        low, high = math.ceil(distribution.low), math.floor(distribution.high)
        if distribution.log:
            return min(high, max(low, round(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))))
        return min(high, low + int(u * (high - low + 1)))
    if distribution.log:
        return math.exp(math.log(distribution.low) + u * (math.log(distribution.high) - math.log(distribution.low)))
    return distribution.low + u * (distribution.high - distribution.low)


def _with(family: TaskFamily, values: Mapping[str, Any]) -> TaskFamily:
    return type(family).model_validate({**family.model_dump(mode="json"), **values})


def check_distribution(family: TaskFamily, distribution: Mapping[str, FieldDistribution]) -> None:
    """Fail before training: unknown fields name the valid ones; every value must validate."""
    fields = type(family).model_fields
    for name, spec in distribution.items():
        if name not in fields:
            raise ValueError(
                f"family_distribution: {type(family).__name__} has no field {name!r}; fields: {', '.join(fields)}"
            )
        if isinstance(spec, Choice):
            values = spec.choices
        elif spec.integer:
            values = (math.ceil(spec.low), math.floor(spec.high))
        else:  # the ends and a value in between that is not a whole number, as draws will be
            values = (spec.low, spec.high, spec.low + (spec.high - spec.low) / math.pi)
        for value in values:
            try:
                _with(family, {name: value})
            except ValidationError as exc:
                raise ValueError(f"family_distribution.{name}: {value!r} is not valid for the family: {exc}") from None


def sample_family(
    family: TaskFamily, distribution: Mapping[str, FieldDistribution], seed: int, trajectory: int
) -> TaskFamily:
    """The family config of one trajectory (the base config when the distribution is empty)."""
    if not distribution:
        return family
    generator = seeded_generator(seed, trajectory, 0x6661)
    return _with(family, {name: _draw(spec, generator) for name, spec in sorted(distribution.items())})


class ScaledTaskStack(TaskStack):
    """The stack seen through θ = s ⊙ φ: the optimizer moves φ, the task's loss sees θ."""

    def __init__(self, inner: TaskStack, log_scale_bound: float, generator: torch.Generator) -> None:
        self.inner = inner
        self.size = inner.size
        self._bound = log_scale_bound
        self._generator = generator
        self._scales: Params | None = None

    def _scales_on(self, device: torch.device) -> Params:
        if self._scales is None:
            shapes = {name: value.shape for name, value in self.inner.init_params("cpu").items()}
            self._scales = {
                name: torch.exp((torch.rand(shape, generator=self._generator) * 2 - 1) * self._bound)
                for name, shape in shapes.items()
            }
        return {name: scale.to(device) for name, scale in self._scales.items()}

    def _theta(self, params: Mapping[str, torch.Tensor]) -> Params:
        device = next(iter(params.values())).device
        scales = self._scales_on(device)
        return {name: value * scales[name] for name, value in params.items()}

    def init_params(self, device: torch.device | str = "cpu") -> Params:
        device = torch.device(device)
        scales = self._scales_on(device)
        return {name: value / scales[name] for name, value in self.inner.init_params(device).items()}

    def losses(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        return self.inner.losses(self._theta(params), step)

    def eval_losses(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        return self.inner.eval_losses(self._theta(params))


def scaled_stack(stack: TaskStack, log_scale_bound: float, seed: int, trajectory: int) -> TaskStack:
    if log_scale_bound <= 0:
        return stack
    return ScaledTaskStack(stack, log_scale_bound, seeded_generator(seed, trajectory, 0x5CA1E))
