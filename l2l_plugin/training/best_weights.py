"""The best weights on validation: what a meta-training run hands back, whenever it stops."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from l2l_plugin.optimizer.network import LSTMOptimizerNet

StateDict = dict[str, Any]


class BestWeights:
    """The lowest finite validation score so far, the iteration it was measured at and a copy
    of the net's weights then (the net keeps training; a later, worse score keeps these)."""

    def __init__(self, net: LSTMOptimizerNet) -> None:
        self.score = math.inf
        self.iteration = 0
        self.weights: StateDict = copy.deepcopy(net.state_dict())

    @property
    def measured_score(self) -> float | None:
        """The best score, or None before any finite one."""
        return self.score if math.isfinite(self.score) else None

    def start_from(self, net: LSTMOptimizerNet) -> None:
        """Take the net's weights as they are now (a warm start), before any score."""
        self.weights = copy.deepcopy(net.state_dict())

    def offer(self, score: float, iteration: int, net: LSTMOptimizerNet) -> bool:
        """Keep the net's weights if ``score`` is finite and beats the best; says whether it did."""
        if not (math.isfinite(score) and score < self.score):
            return False
        self.score = score
        self.iteration = iteration
        self.weights = copy.deepcopy(net.state_dict())
        return True

    def restore(self, score: float, iteration: int, weights: StateDict, device: torch.device) -> None:
        """Back to a checkpoint's best (its weights moved to ``device``)."""
        self.score = score
        self.iteration = iteration
        self.weights = {name: value.to(device) for name, value in weights.items()}

    def load_into(self, net: LSTMOptimizerNet) -> None:
        net.load_state_dict(self.weights)
