"""The plugin contract: a family of optimization problems and the tasks it samples.

A family is a Pydantic model whose fields are its knobs, so its JSON Schema documents it and
invalid configs fail with field-level errors. A task is one problem instance, exposed
functionally (parameters in, scalar loss out) so a meta-trainer can differentiate through the
optimizee's parameter updates.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

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


class TaskStack(abc.ABC):
    """Several tasks of one family optimized side by side (meta-batches, evaluation).

    Every parameter carries a leading dimension of ``size``, one slice per task, and
    :meth:`losses` returns the (size,) vector of per-task losses. Instance ``k``'s loss must
    depend only on slice ``k``, so coordinatewise optimizers treat the tasks independently.
    """

    size: int

    @abc.abstractmethod
    def init_params(self, device: torch.device | str = "cpu") -> Params:
        """Initial parameters, each of shape (size, *task parameter shape)."""

    @abc.abstractmethod
    def losses(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        """(size,) training losses at ``step``."""

    def eval_losses(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """(size,) held-out losses, or ``None`` when the family has none."""
        return None


class LoopedTaskStack(TaskStack):
    """The generic stack: each task sees its own slice, one loss call per task."""

    def __init__(self, tasks: Sequence[Task]) -> None:
        self.tasks = list(tasks)
        self.size = len(self.tasks)

    def init_params(self, device: torch.device | str = "cpu") -> Params:
        per_task = [task.init_params(device) for task in self.tasks]
        return {name: torch.stack([params[name] for params in per_task]) for name in per_task[0]}

    @staticmethod
    def _slice(params: Mapping[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        return {name: value[k] for name, value in params.items()}

    def losses(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        return torch.stack([task.loss(self._slice(params, k), step) for k, task in enumerate(self.tasks)])

    def eval_losses(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        values = [task.eval_loss(self._slice(params, k)) for k, task in enumerate(self.tasks)]
        return None if any(value is None for value in values) else torch.stack(values)


@dataclass(frozen=True)
class TaskCost:
    """What one task of a family costs, worked out from the config alone (nothing sampled), so
    a service can refuse a config before a worker tries to allocate it."""

    #: Optimizee parameters: the LSTM optimizer runs once per coordinate per step.
    coordinates: int
    #: Floats one sampled task holds (its parameters and its own data; data sets shared by all
    #: tasks, such as MNIST, are not counted).
    memory_floats: int
    #: Multiply-adds of one loss-and-gradient evaluation.
    step_work: int


class TaskFamily(BaseModel, abc.ABC):
    """Base class of every task family; subclass it, add fields, implement :meth:`sample`.

    The family's name is the name of the entry point in the ``l2l_plugin.families`` group that
    points at the subclass; its description is the first line of the class docstring.
    """

    # Frozen so a config can be hashed and shared between workers without being mutated.
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Overrides of l2l_plugin.training.MetaTrainConfig that suit this family (nested dicts),
    #: applied beneath the user's own overrides.
    meta_train_defaults: ClassVar[dict[str, Any]] = {}
    #: Optional narrowing of the recipe search (``l2l meta-train --search``) for this family:
    #: knob name → a fixed value, ``{"choices": [...]}`` or ``{"low": a, "high": b}`` inside the
    #: declared space (l2l_registry.search.space; validated when a search starts).
    meta_train_search_hints: ClassVar[dict[str, Any]] = {}

    @abc.abstractmethod
    def sample(self, seed: int) -> Task:
        """The task for ``seed``; the same config and seed must give the same task."""

    def sample_stack(self, seeds: Sequence[int]) -> TaskStack:
        """The tasks for ``seeds`` side by side; override with a vectorized stack for speed.

        An override must agree with :meth:`sample` (the conformance check compares them).
        """
        return LoopedTaskStack([self.sample(seed) for seed in seeds])

    def cost(self) -> TaskCost | None:
        """This config's :class:`TaskCost`; override it when a field multiplies memory or work.

        None (the default) declares nothing: a service then caps only the meta-training knobs.
        """
        return None

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
