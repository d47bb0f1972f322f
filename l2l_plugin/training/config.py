"""Every knob of meta-training and evaluation, with the paper's defaults."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from l2l_plugin.optimizer.config import OptimizerNetConfig
from l2l_plugin.optimizer.cost import PROFILE_PARAMETERS
from l2l_plugin.training.distribution import FieldDistribution
from l2l_plugin.training.presets import PresetName, meta_train_recipe, with_preset

if TYPE_CHECKING:
    from l2l_plugin.families import TaskFamily

BaselineName = Literal["sgd", "nag", "rmsprop", "adam"]


class EvaluationConfig(BaseModel):
    """Held-out comparison against hand-designed optimizers with tuned learning rates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    test_tasks: int = Field(100, ge=1, le=10_000, description="Held-out instances (never trained on).")
    steps: int | None = Field(None, ge=1, le=100_000, description="Optimizee steps; null = the meta-training horizon.")
    tuning_tasks: int = Field(10, ge=1, le=1000, description="Validation instances used to tune baseline learning rates.")
    lr_min: float = Field(1e-4, gt=0, description="Smallest learning rate of the log-spaced tuning grid.")
    lr_max: float = Field(1.0, gt=0, description="Largest learning rate of the grid.")
    lr_points_per_decade: int = Field(2, ge=1, le=10, description="Grid density.")
    grid_extensions: int = Field(
        4,
        ge=0,
        le=20,
        description="When a tuned rate lands on an edge of the grid, extend the grid by a decade on "
        "that side and tune again, at most this many times (the report says if it still ends on an edge).",
    )
    baselines: tuple[BaselineName, ...] = Field(
        ("sgd", "nag", "rmsprop", "adam"), description="Hand-designed optimizers to compare with, each tuned."
    )
    nag_momentum: float = Field(0.9, ge=0, lt=1, description="Nesterov momentum of the NAG baseline.")
    cost_profile_parameters: int = Field(
        PROFILE_PARAMETERS,
        ge=0,
        le=100_000_000,
        description="Model size at which the trained optimizer's step is timed (beside Adam) for its "
        "cost profile in the manifest; 0 skips the timing.",
    )

    @model_validator(mode="after")
    def _grid(self) -> EvaluationConfig:
        if self.lr_max < self.lr_min:
            raise ValueError(f"lr_max ({self.lr_max}) is below lr_min ({self.lr_min})")
        return self


class MetaTrainConfig(BaseModel):
    """Truncated-BPTT meta-training of the LSTM optimizer (field defaults: the paper's recipe)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: PresetName = Field(
        "paper",
        description="Named recipe beneath the other fields: 'paper' (Andrychowicz et al. 2016, the field "
        "defaults) or 'l2l' (the library's recipe for families that name none; see l2l_plugin.training.presets).",
    )

    network: OptimizerNetConfig = OptimizerNetConfig()
    seed: int = Field(0, ge=0, lt=2**31, description="Seeds the network init and the training task stream.")
    meta_iterations: int = Field(1000, ge=1, le=10_000_000, description="Meta-gradient steps (one per unroll).")
    horizon: int = Field(100, ge=1, le=100_000, description="Optimizee steps per trajectory (a fresh task each).")
    unroll_length: int | None = Field(
        20, ge=1, le=100_000, description="Steps per truncated unroll; null: the whole horizon in one unroll."
    )
    meta_batch_size: int = Field(1, ge=1, le=4096, description="Tasks per meta-gradient step.")
    meta_lr: float = Field(1e-3, gt=0, le=1, description="Adam learning rate of the meta-optimizer.")
    meta_lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="'cosine': the meta learning rate decays from meta_lr to 0 over the run (by the "
        "larger of the iteration and the max_seconds fraction: with a time budget the schedule, and so "
        "the result, depends on the machine's speed), which quiets noisy single-task meta-gradients late.",
    )
    meta_loss_log_weight: float = Field(
        0.0, ge=0, description="Per-step meta-loss is mean f + this * mean log f (scale invariance)."
    )
    horizon_curriculum: tuple[Annotated[int, Field(ge=1, le=100_000)], ...] = Field(
        (),
        max_length=16,
        description="Horizons trained in turn instead of horizon, each for an equal share of the run "
        "(the larger of the iteration and the max_seconds fraction, so with a time budget the switch "
        "points depend on the machine's speed), e.g. [100, 200, 400]; empty: horizon throughout.",
    )
    random_unroll_offset: bool = Field(
        False,
        description="The first unroll of each trajectory has a random length in 1..unroll_length, so "
        "truncations fall at different steps of different trajectories.",
    )
    validation_horizon: int | None = Field(
        None, ge=1, le=100_000, description="Steps of the validation rollouts; null: the longest training horizon."
    )
    family_distribution: dict[str, FieldDistribution] = Field(
        default_factory=dict,
        description='Meta-train on a distribution of the family\'s configs: field → {"choices": [...]} or '
        '{"low": a, "high": b, "log": false, "integer": false}; each trajectory draws its own config '
        "(seeded); validation and evaluation use the family's own config.",
    )
    random_scaling: float = Field(
        0.0,
        ge=0,
        le=10,
        description="Per-coordinate random scaling of training tasks: θ = s ⊙ φ with log s ~ U(−c, c) "
        "(RNNprop), c being this value; 0: off.",
    )
    warm_start: Literal["none", "tuned_nominal_lr", "tuned_nominal"] = Field(
        "none",
        description="'tuned_nominal_lr': before meta-training, tune the learning rate of the nominal term "
        "(network.update 'nominal') like a baseline's, on the same tuning tasks and grid, and start from it, "
        "so the untrained optimizer is the tuned hand-designed optimizer; 'tuned_nominal': also choose "
        "network.nominal (adam or nesterov), whichever tunes to the lower loss (the saved config says which).",
    )
    final_loss_steps: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="Meta-loss over the last this-many steps of each trajectory only (weight horizon/K "
        "each, 0 before): aims meta-training at the final loss the gate compares, best with "
        "unroll_length = horizon; null: every step counts (step_weights).",
    )
    step_weights: tuple[float, ...] | None = Field(
        None, description="Meta-loss weight w_t per step t = 1..horizon; null = 1 for every step."
    )
    grad_clip_norm: float | None = Field(None, gt=0, description="Clip the meta-gradient's norm.")
    validation_every: int = Field(50, ge=1, description="Meta-iterations between validations.")
    validation_tasks: int = Field(16, ge=1, le=10_000, description="Fixed validation instances.")
    validation_metric: Literal["meta_loss", "final_loss_mean", "final_loss_geomean", "tail_loss_mean"] = Field(
        "meta_loss",
        description="What picks the best weights on the validation instances: the meta-loss averaged "
        "over the horizon, the mean / geometric mean of the final loss, or 'tail_loss_mean', the mean "
        "loss over the last final_loss_steps steps (10 if unset): the final loss, with less of the "
        "last minibatch's noise.",
    )
    checkpoint_every: int = Field(100, ge=1, description="Meta-iterations between checkpoints.")
    max_consecutive_nonfinite: int = Field(
        20, ge=1, description="Non-finite meta-steps in a row that end the run with an error."
    )
    max_seconds: float | None = Field(None, gt=0, description="Wall-clock budget; stops early when reached.")
    cpu_threads: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] | None = Field(
        "auto",
        description="torch intra-op threads on CPU while training and evaluating: a number, 'auto' (one "
        "thread per 200,000 coordinates of a meta-batch or evaluation stack, within the cores this "
        "process may use, shared among a distributed run's local ranks; small problems get one, "
        "where extra threads only add synchronisation) or null (leave torch's setting).",
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto = CUDA when present.")
    evaluation: EvaluationConfig = EvaluationConfig()

    @model_validator(mode="before")
    @classmethod
    def _preset_beneath(cls, data: Any) -> Any:
        return with_preset(data) if isinstance(data, Mapping) else data

    @model_validator(mode="after")
    def _consistent(self) -> MetaTrainConfig:
        for horizon in self.horizon_curriculum or (self.horizon,):
            if self.unroll_length is not None and horizon % self.unroll_length and not self.random_unroll_offset:
                raise ValueError(
                    f"horizon ({horizon}) must be a multiple of unroll_length ({self.unroll_length}), "
                    "unless random_unroll_offset is on"
                )
        if self.warm_start != "none" and self.network.update != "nominal":
            raise ValueError(f"warm_start '{self.warm_start}' needs network.update 'nominal'")
        if self.final_loss_steps is not None and self.step_weights is not None:
            raise ValueError("set final_loss_steps or step_weights, not both")
        if self.step_weights is not None:
            if self.horizon_curriculum:
                raise ValueError("step_weights cannot be combined with horizon_curriculum")
            if len(self.step_weights) != self.horizon:
                raise ValueError(f"step_weights has {len(self.step_weights)} entries, horizon is {self.horizon}")
        return self

    def horizon_at(self, progress: float) -> int:
        """The training horizon at ``progress`` ∈ [0, 1] of the run."""
        if not self.horizon_curriculum:
            return self.horizon
        stage = min(int(progress * len(self.horizon_curriculum)), len(self.horizon_curriculum) - 1)
        return self.horizon_curriculum[stage]

    def step_weights_for(self, horizon: int) -> tuple[float, ...]:
        """Meta-loss weight of each step 1..horizon."""
        if self.final_loss_steps is not None:
            last = min(self.final_loss_steps, horizon)
            return (0.0,) * (horizon - last) + (horizon / last,) * last
        return self.step_weights or (1.0,) * horizon

    @property
    def longest_horizon(self) -> int:
        """The longest training horizon (the curriculum's last stage replaces ``horizon``)."""
        return max(self.horizon_curriculum) if self.horizon_curriculum else self.horizon

    @property
    def validation_steps(self) -> int:
        return self.validation_horizon or self.longest_horizon

    @property
    def evaluation_steps(self) -> int:
        return self.evaluation.steps or self.longest_horizon


def resolve_meta_train_config(
    family: TaskFamily, overrides: Mapping[str, Any] | None = None, *, family_defaults: bool = True
) -> MetaTrainConfig:
    """The preset, the family's ``meta_train_defaults`` (unless ``family_defaults`` is False: the
    recipe of a family nobody tuned) and the user's overrides, in that order, validated."""
    defaults = type(family).meta_train_defaults if family_defaults else {}
    return MetaTrainConfig.model_validate(meta_train_recipe(defaults, overrides))
