"""Labelled images kept on a compute device, and the seeded minibatches the task families draw."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from l2l_mnist_data.loader import Split, load_mnist, resolve_root


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to float32 in [0, 1]."""
    return images.to(torch.float32).div_(255.0)


@dataclass(frozen=True)
class ImageSet:
    """uint8 images (N, C, H, W) and int64 labels (N,) on one device.

    Pixels stay uint8 on the device (a quarter of the memory of float32) and only the rows a
    step uses are converted, so a step never copies the whole set.
    """

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ImageSet:
        return ImageSet(self.images.to(device), self.labels.to(device))

    def head(self, count: int | None) -> ImageSet:
        """The first ``count`` examples (a view, no copy); all of them for ``None``."""
        if count is None or count >= len(self):
            return self
        return ImageSet(self.images[:count], self.labels[:count])

    def sample_batch(self, generator: torch.Generator, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` examples drawn uniformly with replacement, as the paper's code does.

        Indices come from the CPU ``generator``, so the batch is the same on every device.
        """
        index = torch.randint(len(self), (batch_size,), generator=generator).to(self.device)
        return to_unit_float(self.images.index_select(0, index)), self.labels.index_select(0, index)

    def chunks(self, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Consecutive float batches of at most ``size`` examples covering the set once.

        Chunks are of near-equal size (never a stray single example at the end), which
        matters to networks that normalize with batch statistics.
        """
        count = max(1, -(-len(self) // size))
        for images, labels in zip(self.images.tensor_split(count), self.labels.tensor_split(count)):
            yield to_unit_float(images), labels


@functools.lru_cache(maxsize=8)
def _mnist_on(split: Split, root: Path | None, device: torch.device) -> ImageSet:
    images, labels = load_mnist(split, root)
    return ImageSet(images.unsqueeze(1), labels).to(device)


def canonical_device(device: torch.device | str) -> torch.device:
    """``device`` as a cache key: "cuda" and "cuda:0" name the same memory, so one entry."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def mnist_image_set(
    split: Split, root: str | os.PathLike[str] | None, device: torch.device | str
) -> ImageSet:
    """MNIST ``split`` as an :class:`ImageSet` of shape (N, 1, 28, 28) on ``device``, cached."""
    return _mnist_on(split, resolve_root(root), canonical_device(device))
