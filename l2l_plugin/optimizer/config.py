"""The learned optimizer's architecture, saved with its weights."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_GROUP = "default"

UpdateRule = Literal["linear", "tanh", "nominal"]
NominalDirection = Literal["adam", "nesterov"]
NetworkKind = Literal["lstm", "ntm_bfgs"]

#: Largest (coordinates × memory rows) one NTM-BFGS call may hold: 2³⁰ floats, 4 GiB. Above it the
#: history of write vectors alone outgrows a typical accelerator; fewer slots or heads fit more.
MAX_MEMORY_FLOATS = 2**30


class GroupRule(BaseModel):
    """Parameters whose name matches ``pattern`` (``re.search``) get the LSTM named ``name``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="Name of the group's LSTM."
    )
    pattern: str = Field(min_length=1, description="Regular expression searched in the parameter name.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern


class MemoryConfig(BaseModel):
    """NTM-BFGS's outer-product memory (Andrychowicz et al. 2016, appendix B; its L-BFGS-like variant).

    Each write head emits a left and a right write vector a, b (one value per coordinate); the
    memory M = Σ a bᵀ over the last ``slots`` steps is never formed: the vectors are kept, and a
    read head's key r reads M r = Σ a ⟨b, r⟩, the inner product taken over all coordinates of one
    optimizee (divided by their count, so the scale does not depend on the model's size).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    slots: int = Field(
        8, ge=1, le=64, description="Steps of write vectors kept (like L-BFGS's history); older ones drop out."
    )
    read_heads: int = Field(1, ge=1, le=8, description="Read heads: each reads one vector, fed to the update and to the next step's input.")
    write_heads: int = Field(1, ge=1, le=8, description="Write heads: each adds one outer product a bᵀ per step.")
    read_scale: float = Field(1.0, gt=0, le=100, description="Multiplier of every read result.")

    @property
    def history_rows(self) -> int:
        """Rows of kept write vectors per coordinate: slots × write heads × (a and b)."""
        return self.slots * self.write_heads * 2

    @property
    def rows(self) -> int:
        """Memory rows per coordinate: the kept write vectors, then the last read of each head."""
        return self.history_rows + self.read_heads


class OptimizerNetConfig(BaseModel):
    """Coordinatewise LSTM optimizer (Andrychowicz et al. 2016, section 2.1 and appendix A), or NTM-BFGS (appendix B)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: NetworkKind = Field(
        "lstm",
        description="Architecture: 'lstm' (the coordinatewise LSTM, paper section 2.1) or 'ntm_bfgs' "
        "(that LSTM as the controller of an outer-product memory with read and write heads, paper "
        "appendix B: something like a learned quasi-Newton update).",
    )
    memory: MemoryConfig | None = Field(
        None, description="The NTM-BFGS memory (kind 'ntm_bfgs' only; its defaults when omitted)."
    )
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
    gradient_input: bool = Field(
        True,
        description="Feed the gradient itself (log/sign preprocessed, or raw when preprocess_p is null).",
    )
    momentum_decays: tuple[Annotated[float, Field(gt=0, lt=1)], ...] = Field(
        (),
        max_length=8,
        description="Decays of running first moments kept per coordinate; each gives the input "
        "m̂/√v̂ (RNNprop; momentum at several timescales, Wichrowska et al. 2017).",
    )
    rms_decay: float = Field(
        0.999, gt=0, lt=1, description="Decay of the running second moment v that normalises the moment inputs."
    )
    normalized_gradient: bool = Field(False, description="Also feed g/√v̂ (RNNprop).")
    epsilon: float = Field(1e-8, gt=0, le=1, description="Added to √v̂ in every normalisation.")
    param_input: bool = Field(False, description="Also feed the parameter's current value.")
    progress_horizon: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Also feed step / progress_horizon (a progress-in-horizon feature); null: off.",
    )
    gac_cells: int = Field(
        0,
        ge=0,
        description="Global averaging cells per layer: the first gac_cells hidden units of each "
        "layer are averaged across all coordinates of an optimizee at every step.",
    )
    update: UpdateRule = Field(
        "linear",
        description="How the LSTM's output becomes the step: 'linear' (the paper: head × "
        "output_scale), 'tanh' (bounded: tanh(head) × output_scale, RNNprop) or 'nominal' "
        "(Harrison et al. 2022: −exp(log lr + magnitude_scale·head₁) · (d + output_scale·head₀·r), "
        "d the nominal direction, r its unit: exactly the nominal hand-designed step before any "
        "meta-training).",
    )
    nominal: NominalDirection = Field(
        "adam",
        description="Nominal direction of update 'nominal': 'adam' (m̂/(√v̂+ε), unit r = 1) or 'nesterov' "
        "(g + μ·b, torch's SGD(nesterov=True) buffer b with μ the first momentum decay; unit r = √v̂+ε).",
    )
    nominal_lr: float = Field(
        1e-3, gt=0, le=1000, description="Initial learning rate of the nominal term (update 'nominal')."
    )
    learn_nominal_lr: bool = Field(True, description="Meta-train the nominal learning rate's logarithm too.")
    magnitude_scale: float = Field(
        1.0, gt=0, le=10, description="Multiplier of the learned log-magnitude (update 'nominal')."
    )
    state_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="How each coordinate's LSTM state (h and c of every layer) is stored between steps "
        "taken without a graph (evaluation, LearnedOptimizer): 'bfloat16' halves the optimizer's "
        "memory; the arithmetic stays float32, meta-training's differentiated unrolls stay float32, "
        "and the moments stay float32 (bfloat16 would round away their small increments).",
    )
    groups: tuple[GroupRule, ...] = Field(
        (),
        description="Separate LSTMs per parameter group, first matching rule wins; parameters that "
        f"match no rule use the LSTM named '{DEFAULT_GROUP}'.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_memory(cls, data: object) -> object:
        # Filled in (not left null), so a saved manifest records the memory it was trained with.
        if isinstance(data, dict) and data.get("kind") == "ntm_bfgs" and data.get("memory") is None:
            return {**data, "memory": {}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> OptimizerNetConfig:
        if self.memory is not None and self.kind != "ntm_bfgs":
            raise ValueError(f"memory is only valid with kind 'ntm_bfgs' (kind is '{self.kind}')")
        if self.gac_cells > self.hidden_size:
            raise ValueError(f"gac_cells ({self.gac_cells}) exceeds hidden_size ({self.hidden_size})")
        if self.update == "nominal" and not self.momentum_decays:
            raise ValueError("update 'nominal' needs momentum_decays (its nominal direction uses the first one)")
        if self.num_features == 0:
            raise ValueError("the network has no inputs: enable gradient_input or another input")
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
    def uses_moments(self) -> bool:
        return bool(self.momentum_decays) or self.normalized_gradient

    @property
    def couples_coordinates(self) -> bool:
        """Whether a step needs all of an optimizee's coordinates at once (no chunked in-place step)."""
        return bool(self.gac_cells) or self.memory is not None

    @property
    def read_heads(self) -> int:
        return self.memory.read_heads if self.memory is not None else 0

    @property
    def num_features(self) -> int:
        gradient = (2 if self.preprocess_p is not None else 1) if self.gradient_input else 0
        return (
            gradient
            + len(self.momentum_decays)
            + int(self.normalized_gradient)
            + int(self.param_input)
            + int(self.progress_horizon is not None)
            + int(self.loss_input)
        )

    @property
    def num_outputs(self) -> int:
        return 2 if self.update == "nominal" else 1
