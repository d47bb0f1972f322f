"""What a meta-training run hands back."""

from __future__ import annotations

from dataclasses import dataclass, field

from l2l_plugin.optimizer.network import LSTMOptimizerNet
from l2l_plugin.training.config import MetaTrainConfig


@dataclass
class MetaTrainResult:
    net: LSTMOptimizerNet  # holds the best weights on validation
    best_validation_loss: float
    best_iteration: int
    iterations: int
    skipped_nonfinite: int
    wall_seconds: float
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = "completed"  # or "time budget" (max_seconds ended it early)
    config: MetaTrainConfig | None = None  # as trained (warm_start 'tuned_nominal' picks network.nominal)
