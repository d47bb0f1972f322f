"""A task that trains a classifier network on seeded minibatches: shared by the image families."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from l2l_mnist_data.image_set import ImageSet, canonical_device
from l2l_plugin.families import LoopedTaskStack, Params, Task, seeded_generator

ImageSource = Callable[[torch.device], ImageSet]
"""The images of one split on a given device (cached by the caller; called once per device)."""


class ClassificationTask(Task):
    """Mean cross-entropy of ``network`` (used functionally) on labelled images.

    The minibatch of ``step`` is drawn with replacement by ``seeded_generator(seed, step)``, so
    every optimizer run on this task sees the same batches; the initial parameters come from
    ``seeded_generator(seed)``. ``eval_loss`` is the mean cross-entropy over the whole
    held-out set, taken in fixed chunks of at most ``eval_chunk`` images without gradients.
    """

    def __init__(
        self,
        *,
        seed: int,
        network: nn.Module,
        initial_params: Callable[[torch.Generator], Params],
        train: ImageSource,
        held_out: ImageSource,
        batch_size: int,
        eval_chunk: int = 2000,
    ) -> None:
        self.seed = seed
        self.network = network
        self.batch_size = batch_size
        self.eval_chunk = eval_chunk
        self._initial_params = initial_params
        self._sources = {"train": train, "held_out": held_out}
        # Per-task memo in front of the process-wide caches: one dict lookup per step.
        self._on_device: dict[tuple[str, torch.device], ImageSet] = {}

    def _images(self, split: str, device: torch.device) -> ImageSet:
        key = (split, device)
        if key not in self._on_device:
            self._on_device[key] = self._sources[split](canonical_device(device))
        return self._on_device[key]

    def init_params(self, device: torch.device | str = "cpu") -> Params:
        params = self._initial_params(seeded_generator(self.seed))
        return {name: value.to(device) for name, value in params.items()}

    def logits(self, params: Mapping[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        return functional_call(self.network, dict(params), (images,))

    def loss(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        device = next(iter(params.values())).device
        images, labels = self._images("train", device).sample_batch(
            seeded_generator(self.seed, step), self.batch_size
        )
        return F.cross_entropy(self.logits(params, images), labels)

    @torch.no_grad()
    def eval_loss(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        device = next(iter(params.values())).device
        held_out = self._images("held_out", device)
        total = torch.zeros((), device=device)
        for images, labels in held_out.chunks(self.eval_chunk):
            total += F.cross_entropy(self.logits(params, images), labels, reduction="sum")
        return total / len(held_out)


class ClassificationStack(LoopedTaskStack):
    """Classification tasks of one network shape, run as one vmapped network call.

    Each task keeps its own initial parameters and minibatch stream; ``torch.func.vmap`` turns
    the per-task matrix products into batched ones, which is what makes meta-batches cheap.
    """

    tasks: list[ClassificationTask]

    def __init__(self, tasks: Sequence[ClassificationTask]) -> None:
        super().__init__(tasks)  # stacked initial parameters and held-out losses, task by task
        network = self.tasks[0].network

        def task_loss(params: Params, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(functional_call(network, params, (images,)), labels)

        self._losses = torch.func.vmap(task_loss)

    def losses(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        device = next(iter(params.values())).device
        batches = [
            task._images("train", device).sample_batch(seeded_generator(task.seed, step), task.batch_size)
            for task in self.tasks
        ]
        images = torch.stack([images for images, _ in batches])
        labels = torch.stack([labels for _, labels in batches])
        return self._losses(dict(params), images, labels)
