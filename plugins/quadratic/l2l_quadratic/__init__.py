"""Random quadratics f(θ) = ‖Wθ − y‖², the first experiment of Andrychowicz et al. (2016)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from l2l_plugin.families import Params, Task, TaskCost, TaskFamily, TaskStack, seeded_generator


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


class QuadraticStack(TaskStack):
    """Many quadratic tasks in one batched einsum (the meta-trainer's fast path)."""

    def __init__(self, tasks: Sequence[QuadraticTask]) -> None:
        self.size = len(tasks)
        self.weights = torch.stack([task.weights for task in tasks])  # (size, functions, dim, dim)
        self.targets = torch.stack([task.targets for task in tasks])
        self.theta0 = torch.stack([task.theta0 for task in tasks])

    def init_params(self, device: torch.device | str = "cpu") -> Params:
        return {"theta": self.theta0.clone().to(device)}

    def losses(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        theta = params["theta"]
        weights = self.weights.to(theta.device)
        residual = torch.einsum("kfij,kfj->kfi", weights, theta) - self.targets.to(theta.device)
        return residual.square().sum(dim=2).mean(dim=1)


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

    # Measured on this family (see BENCHMARKS.md): raw gradients as in the paper's quadratic
    # experiment, plus the log-loss input and the scale-invariant log term of later work.
    meta_train_defaults: ClassVar[dict[str, Any]] = {
        "preset": "paper",
        "network": {"preprocess_p": None, "loss_input": True, "output_scale": 0.1},
        "meta_loss_log_weight": 0.1,
        "meta_lr": 1e-2,
        "grad_clip_norm": 1.0,
        "meta_batch_size": 32,
        "meta_iterations": 6000,
        "validation_every": 100,
        "validation_tasks": 64,
        "max_seconds": 270,
        "evaluation": {"tuning_tasks": 32, "lr_min": 1e-4, "lr_max": 1.0, "lr_points_per_decade": 4},
    }

    def cost(self) -> TaskCost:
        # W is num_functions × dim × dim: the one field product that can reach hundreds of GB.
        functions, dim = self.num_functions, self.dim
        return TaskCost(
            coordinates=functions * dim,
            memory_floats=functions * dim * (dim + 2),
            step_work=2 * functions * dim * dim,  # Wθ, then Wᵀ(residual) for the gradient
        )

    def sample(self, seed: int) -> QuadraticTask:
        generator = seeded_generator(seed)
        shape = (self.num_functions, self.dim)
        draw = torch.randn if self.distribution == "gaussian" else torch.rand
        weights = draw((*shape, self.dim), generator=generator)
        targets = draw(shape, generator=generator)
        theta0 = torch.randn(shape, generator=generator) * self.theta_init_std
        return QuadraticTask(weights, targets, theta0)

    def sample_stack(self, seeds: Sequence[int]) -> QuadraticStack:
        return QuadraticStack([self.sample(seed) for seed in seeds])
