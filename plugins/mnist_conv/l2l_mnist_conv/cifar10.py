"""CIFAR-10 from a local copy of the "python version" (cifar-10-python.tar.gz, extracted).

The folder (``cifar-10-batches-py``, or a folder containing it) holds ``data_batch_1`` …
``data_batch_5`` and ``test_batch``: pickled dicts with ``b"data"``, a uint8 array of shape
(N, 3072) — the red, green and blue 32×32 planes of each image, row-major — and
``b"labels"``, a list of N ints in 0..9. They are read with an unpickler that builds numpy
arrays and nothing else; no CIFAR package exists offline, so nothing is downloaded.
"""

from __future__ import annotations

import functools
import os
import pickle
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from l2l_mnist_data import ImageSet, canonical_device, load_numpy_pickle
from l2l_plugin.errors import L2LError

Split = Literal["train", "test"]

FOLDER = "cifar-10-batches-py"
CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


class Cifar10DataError(L2LError, RuntimeError):
    """CIFAR-10 files are missing, unreadable or not CIFAR-10."""


def _expected() -> str:
    names = ", ".join(name for names in CIFAR10_FILES.values() for name in names)
    return f"a folder with {names} (extract cifar-10-python.tar.gz, which holds {FOLDER}/)"


def find_cifar10_dir(root: str | os.PathLike[str]) -> Path:
    """The folder holding the batches: ``root`` itself or its ``cifar-10-batches-py``."""
    root = Path(root).expanduser().resolve()
    for folder in (root, root / FOLDER):
        if any((folder / name).is_file() for names in CIFAR10_FILES.values() for name in names):
            return folder
    if not root.is_dir():
        raise Cifar10DataError(f"CIFAR-10 folder {root} does not exist; expected {_expected()}")
    raise Cifar10DataError(
        f"no CIFAR-10 batch files in {root} nor in {root / FOLDER}; expected {_expected()}"
    )


def _field(batch: dict[Any, Any], key: str) -> Any:
    # The original files, unpickled with encoding="bytes", have bytes keys; accept str too.
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise KeyError(key)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as (uint8 images (N, 3, 32, 32), int64 labels (N,))."""
    if not path.is_file():
        raise Cifar10DataError(
            f"CIFAR-10 file {path.name} is missing from {path.parent}; expected {_expected()}"
        )
    try:
        with path.open("rb") as stream:
            batch = load_numpy_pickle(stream, encoding="bytes")
        data, labels = _field(batch, "data"), np.asarray(_field(batch, "labels"))
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        raise Cifar10DataError(f"cannot read CIFAR-10 file {path}: {type(exc).__name__}: {exc}") from exc
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072
    ):
        shape = getattr(data, "shape", None)
        raise Cifar10DataError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {shape}")
    if (
        labels.shape != (data.shape[0],)
        or labels.dtype.kind not in "iu"
        or labels.min() < 0
        or labels.max() > 9
    ):
        raise Cifar10DataError(f"{path}: b'labels' must be {data.shape[0]} integers in 0..9")
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _load(split: Split, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    batches = [read_batch(folder / name) for name in CIFAR10_FILES[split]]
    images = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return torch.from_numpy(images), torch.from_numpy(labels)


def load_cifar10(split: Split, root: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-10 ``split`` as (uint8 images (N, 3, 32, 32), int64 labels (N,)), cached per process.

    ``root`` is the ``cifar-10-batches-py`` folder or a folder containing it. Treat the
    returned tensors as read-only: they are shared between callers.
    """
    if split not in CIFAR10_FILES:
        raise ValueError(f"unknown CIFAR-10 split {split!r}; expected one of {sorted(CIFAR10_FILES)}")
    return _load(split, find_cifar10_dir(root))


@functools.lru_cache(maxsize=8)
def _on_device(split: Split, folder: Path, device: torch.device) -> ImageSet:
    return ImageSet(*_load(split, folder)).to(device)


def cifar10_image_set(split: Split, root: str | os.PathLike[str], device: torch.device | str) -> ImageSet:
    """CIFAR-10 ``split`` as an :class:`ImageSet` on ``device``, cached per device."""
    return _on_device(split, find_cifar10_dir(root), canonical_device(device))
