"""The plugin contract: a family of optimization problems and the tasks it samples.

A family is a Pydantic model whose fields are its knobs, so its JSON Schema documents it and
invalid configs fail with field-level errors. A task is one problem instance, exposed
functionally (parameters in, scalar loss out) so a meta-trainer can differentiate through the
optimizee's parameter updates.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping

import torch
from pydantic import BaseModel, ConfigDict

Params = dict[str, torch.Tensor]


class Task(abc.ABC):
    """One problem instance sampled from a family.

    Stochastic tasks must draw the minibatch of ``step`` from a generator seeded by the task
    and the step, so a trajectory is reproducible and every optimizer compared on a task sees
    the same sequence of minibatches.
    """

    @abc.abstractmethod
    def init_params(self, device: torch.device | str = "cpu") -> Params:
        """Fresh initial parameters (leaf tensors, floating point) on ``device``."""

    @abc.abstractmethod
    def loss(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        """Scalar training loss of ``params`` at optimization step ``step``."""

    def eval_loss(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """Held-out loss (for example on test data), or ``None`` when the family has none."""
        return None


class TaskFamily(BaseModel, abc.ABC):
    """Base class of every task family; subclass it, add fields, implement :meth:`sample`.

    The family's name is the name of the entry point in the ``l2l_plugin.families`` group that
    points at the subclass; its description is the first line of the class docstring.
    """

    # Frozen so a config can be hashed and shared between workers without being mutated.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @abc.abstractmethod
    def sample(self, seed: int) -> Task:
        """The task for ``seed``; the same config and seed must give the same task."""

    @classmethod
    def description(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


def seeded_generator(*seeds: int) -> torch.Generator:
    """A CPU generator determined by a tuple of integers (task seed, step, stream, ...)."""
    # Mix with large odd multipliers so (seed, step) pairs do not collide as seed + step would.
    mixed = 0
    for value in seeds:
        mixed = (mixed * 0x9E3779B97F4A7C15 + int(value) + 1) % (2**63 - 1)
    generator = torch.Generator()
    generator.manual_seed(mixed)
    return generator
