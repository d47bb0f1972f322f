"""Unpickle numpy-array data sets (mnist.pkl.gz, CIFAR-10 python batches) without running code.

A pickle can name any importable callable; these data sets only need numpy's array
reconstruction, so everything else is refused before it is imported.
"""

from __future__ import annotations

import pickle
from typing import Any, BinaryIO, Literal

import numpy as np

try:  # numpy >= 2 moved the implementation; pickles written by numpy 1 name the old module.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy < 2
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

# (module, name) pairs a pickled ndarray refers to, under both numpy 1 and numpy 2 spellings.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that builds builtins and numpy arrays and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays may be unpickled from a data file"
            ) from None


def load_numpy_pickle(stream: BinaryIO, encoding: Literal["bytes", "latin1"] = "bytes") -> Any:
    """Unpickle ``stream`` with :class:`NumpyOnlyUnpickler`.

    ``encoding`` decodes Python 2 ``str`` objects: ``"latin1"`` for pickles whose arrays were
    written by Python 2 numpy (mnist.pkl.gz), ``"bytes"`` to keep dict keys as bytes as the
    CIFAR-10 documentation expects (``b"data"``, ``b"labels"``).
    """
    return NumpyOnlyUnpickler(stream, encoding=encoding).load()
