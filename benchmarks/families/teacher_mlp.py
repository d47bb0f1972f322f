"""A throwaway family for benchmarks only (not shipped, no ``meta_train_defaults``).

Regression onto a random teacher network: inputs x ~ N(0, I_8), targets from a fixed random
tanh MLP plus noise; the student is an 8 → 16 → 1 tanh MLP trained by mean squared error on
minibatches of 32. Teacher, student initialisation and minibatches all come from the task's
seed, the way a user's own family would be written from the README.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import Field

from l2l_plugin.families import Params, Task, TaskFamily, seeded_generator


class TeacherMlpTask(Task):
    def __init__(self, seed: int, family: TeacherMlpFamily) -> None:
        self.seed = seed
        self.family = family
        generator = seeded_generator(seed, 1)
        inputs, hidden = family.inputs, family.teacher_hidden
        self.teacher = (torch.randn(hidden, inputs, generator=generator), torch.randn(1, hidden, generator=generator))

    def init_params(self, device: torch.device | str = "cpu") -> Params:
        generator = seeded_generator(self.seed, 2)
        inputs, hidden = self.family.inputs, self.family.hidden
        return {
            "fc1.weight": (torch.randn(hidden, inputs, generator=generator) / inputs**0.5).to(device),
            "fc1.bias": torch.zeros(hidden, device=device),
            "fc2.weight": (torch.randn(1, hidden, generator=generator) / hidden**0.5).to(device),
            "fc2.bias": torch.zeros(1, device=device),
        }

    def _batch(self, step: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        generator = seeded_generator(self.seed, 3, step)
        x = torch.randn(self.family.batch_size, self.family.inputs, generator=generator)
        w1, w2 = self.teacher
        y = torch.tanh(x @ w1.T) @ w2.T + self.family.noise * torch.randn(x.shape[0], 1, generator=generator)
        return x.to(device), y.to(device)

    def loss(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        x, y = self._batch(step, params["fc1.weight"].device)
        hidden = torch.tanh(x @ params["fc1.weight"].T + params["fc1.bias"])
        prediction = hidden @ params["fc2.weight"].T + params["fc2.bias"]
        return (prediction - y).square().mean()


class TeacherMlpFamily(TaskFamily):
    """Regression onto a random tanh teacher MLP by a small tanh student MLP (benchmark only)."""

    inputs: int = Field(8, ge=1, le=256)
    teacher_hidden: int = Field(8, ge=1, le=256)
    hidden: int = Field(16, ge=1, le=256)
    batch_size: int = Field(32, ge=1, le=4096)
    noise: float = Field(0.1, ge=0.0, le=10.0)

    def sample(self, seed: int) -> TeacherMlpTask:
        return TeacherMlpTask(seed, self)
