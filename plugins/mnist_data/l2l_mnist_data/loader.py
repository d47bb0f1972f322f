"""Load MNIST from the packaged copy, or from a user's folder in the standard IDX layout."""

from __future__ import annotations

import functools
import gzip
import os
import zlib
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

import torch

from l2l_mnist_data.idx import IdxFormatError, decode_idx
from l2l_plugin.errors import L2LError

Split = Literal["train", "test"]

ENV_VAR = "L2L_MNIST_DIR"
"""A folder of MNIST IDX files used instead of the packaged copy when no root is given."""

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""Images and labels file of each split, as distributed; each may also end in ``.gz``."""

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10


class MnistDataError(L2LError, RuntimeError):
    """MNIST files are missing, unreadable or not MNIST."""


def packaged_data_dir() -> Traversable:
    """The folder of the MNIST copy shipped inside this package."""
    return files("l2l_mnist_data") / "data"


def _expected_names() -> str:
    names = [name for pair in MNIST_FILES.values() for name in pair]
    return ", ".join(f"{name}[.gz]" for name in names)


def resolve_root(root: str | os.PathLike[str] | None) -> Path | None:
    """The user folder to read, or ``None`` for the packaged copy (``root``, then $L2L_MNIST_DIR)."""
    if root is None:
        root = os.environ.get(ENV_VAR) or None
    if root is None:
        return None
    # Resolved so that one folder spelt two ways shares one cache entry.
    return Path(root).expanduser().resolve()


def _find(directory: Traversable, stem: str) -> Traversable:
    # torchvision keeps the same files under MNIST/raw; accepting it saves users a copy.
    for folder in (directory, directory / "MNIST" / "raw"):
        for name in (f"{stem}.gz", stem):
            candidate = folder / name
            if candidate.is_file():
                return candidate
    raise MnistDataError(
        f"MNIST file {stem}[.gz] not found in {directory} (nor in its MNIST/raw); "
        f"an MNIST folder holds {_expected_names()}"
    )


def _read(file: Traversable) -> torch.Tensor:
    try:
        array = decode_idx(file.read_bytes())
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, IdxFormatError) as exc:
        raise MnistDataError(f"cannot read MNIST file {file}: {type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(array)


def _check(split: str, images: torch.Tensor, labels: torch.Tensor, where: Traversable) -> None:
    problems = []
    if images.dtype != torch.uint8 or images.dim() != 3 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        problems.append(f"images are {images.dtype} {tuple(images.shape)}, expected uint8 (N, 28, 28)")
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        problems.append(f"labels are {labels.dtype} {tuple(labels.shape)}, expected uint8 (N,)")
    elif labels.numel() and int(labels.max()) >= NUM_CLASSES:
        problems.append(f"labels go up to {int(labels.max())}, expected 0..{NUM_CLASSES - 1}")
    if not problems and images.shape[0] != labels.shape[0]:
        problems.append(f"{images.shape[0]} images but {labels.shape[0]} labels")
    if not problems and images.shape[0] == 0:
        problems.append("the split is empty")
    if problems:
        raise MnistDataError(f"MNIST {split} split in {where} is not MNIST: " + "; ".join(problems))


@functools.lru_cache(maxsize=8)
def _load(split: Split, root: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    if root is None:
        directory: Traversable = packaged_data_dir()
    else:
        if not root.is_dir():
            raise MnistDataError(
                f"MNIST folder {root} does not exist or is not a folder; it should hold {_expected_names()}"
            )
        directory = root
    image_stem, label_stem = MNIST_FILES[split]
    images = _read(_find(directory, image_stem))
    labels = _read(_find(directory, label_stem))
    _check(split, images, labels, directory)
    return images, labels.long()


def load_mnist(
    split: Split = "train", root: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` as (uint8 images of shape (N, 28, 28), int64 labels of shape (N,)).

    ``root`` is a folder of IDX files with the standard names (gzipped or not); ``None``
    means ``$L2L_MNIST_DIR`` when set, else the packaged copy (train 60,000, test 10,000).
    Results are cached per process and shared: treat them as read-only.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"unknown MNIST split {split!r}; expected one of {sorted(MNIST_FILES)}")
    return _load(split, resolve_root(root))
