"""The learned optimizer's architecture, saved with its weights."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_GROUP = "default"


class GroupRule(BaseModel):
    """Parameters whose name matches ``pattern`` (``re.search``) get the LSTM named ``name``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    pattern: str = Field(min_length=1, description="Regular expression searched in the parameter name.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern


class OptimizerNetConfig(BaseModel):
    """Coordinatewise LSTM optimizer (Andrychowicz et al. 2016, section 2.1 and appendix A)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden_size: int = Field(20, ge=1, le=512, description="Hidden units per LSTM layer.")
    num_layers: int = Field(2, ge=1, le=4, description="Stacked LSTM layers.")
    preprocess_p: float | None = Field(
        10.0,
        gt=0,
        le=50,
        description="Log/sign gradient preprocessing with this p (paper: 10); null feeds the raw "
        "gradient times input_scale.",
    )
    input_scale: float = Field(1.0, gt=0, description="Raw-gradient multiplier when preprocess_p is null.")
    output_scale: float = Field(0.1, gt=0, le=100, description="Multiplier of the LSTM's output.")
    loss_input: bool = Field(
        False,
        description="Also feed log(loss) / loss_input_scale to every coordinate (later work: helps "
        "the optimizer know how far it is from the optimum).",
    )
    loss_input_scale: float = Field(10.0, gt=0, description="Divisor of log(loss) when loss_input is on.")
    gac_cells: int = Field(
        0,
        ge=0,
        description="Global averaging cells per layer: the first gac_cells hidden units of each "
        "layer are averaged across all coordinates of an optimizee at every step.",
    )
    groups: tuple[GroupRule, ...] = Field(
        (),
        description="Separate LSTMs per parameter group, first matching rule wins; parameters that "
        f"match no rule use the LSTM named '{DEFAULT_GROUP}'.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> OptimizerNetConfig:
        if self.gac_cells > self.hidden_size:
            raise ValueError(f"gac_cells ({self.gac_cells}) exceeds hidden_size ({self.hidden_size})")
        names = [rule.name for rule in self.groups]
        if len(set(names)) != len(names) or DEFAULT_GROUP in names:
            raise ValueError(f"group names must be distinct and not '{DEFAULT_GROUP}': {names}")
        return self

    @property
    def group_names(self) -> tuple[str, ...]:
        return (*(rule.name for rule in self.groups), DEFAULT_GROUP)

    def group_of(self, parameter_name: str) -> str:
        for rule in self.groups:
            if re.search(rule.pattern, parameter_name):
                return rule.name
        return DEFAULT_GROUP

    @property
    def num_features(self) -> int:
        return (2 if self.preprocess_p is not None else 1) + (1 if self.loss_input else 0)
