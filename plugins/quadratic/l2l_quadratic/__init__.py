"""Random quadratics f(θ) = ‖Wθ − y‖², the first experiment of Andrychowicz et al. (2016)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from pydantic import Field

from l2l_plugin.families import Params, Task, TaskFamily, seeded_generator


class QuadraticTask(Task):
    def __init__(self, weights: torch.Tensor, targets: torch.Tensor, theta0: torch.Tensor) -> None:
        self.weights = weights  # (functions, dim, dim)
        self.targets = targets  # (functions, dim)
        self.theta0 = theta0  # (functions, dim)

    def init_params(self, device: torch.device | str = "cpu") -> Params:
        return {"theta": self.theta0.clone().to(device)}

    def loss(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        theta = params["theta"]
        weights = self.weights.to(theta.device)
        residual = torch.einsum("fij,fj->fi", weights, theta) - self.targets.to(theta.device)
        return residual.square().sum(dim=1).mean()


class QuadraticFamily(TaskFamily):
    """Random quadratics ‖Wθ − y‖² with W, y drawn per task (the paper's first experiment)."""

    dim: int = Field(10, ge=1, le=4096, description="Dimension of θ (and of y; W is dim × dim).")
    num_functions: int = Field(
        1, ge=1, le=4096, description="Independent functions per task; the loss is their mean."
    )
    distribution: Literal["gaussian", "uniform"] = Field(
        "gaussian",
        description="W and y entries: 'gaussian' N(0, 1) as in the paper, or 'uniform' U[0, 1) "
        "as in the official code.",
    )
    theta_init_std: float = Field(0.01, ge=0.0, le=100.0, description="θ₀ ~ N(0, theta_init_std²).")

    def sample(self, seed: int) -> QuadraticTask:
        generator = seeded_generator(seed)
        shape = (self.num_functions, self.dim)
        draw = torch.randn if self.distribution == "gaussian" else torch.rand
        weights = draw((*shape, self.dim), generator=generator)
        targets = draw(shape, generator=generator)
        theta0 = torch.randn(shape, generator=generator) * self.theta_init_std
        return QuadraticTask(weights, targets, theta0)
