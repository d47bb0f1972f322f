"""MNIST (LeCun, Cortes & Burges) stored offline as gzipped IDX files, with a cached loader.

    from l2l_mnist_data import load_mnist
    images, labels = load_mnist("train")  # uint8 (60000, 28, 28), int64 (60000,)

See data/PROVENANCE.md for where the packaged copy comes from. ``ClassificationTask`` is the
task of the image-classification families (mnist_mlp, mnist_conv): a network used
functionally, cross-entropy on seeded minibatches, held-out loss on the test split.
"""

from l2l_mnist_data.classification import ClassificationStack, ClassificationTask, ImageSource
from l2l_mnist_data.idx import IdxFormatError, decode_idx, encode_idx, write_idx_gz
from l2l_mnist_data.image_set import ImageSet, canonical_device, mnist_image_set, to_unit_float
from l2l_mnist_data.loader import (
    ENV_VAR,
    MNIST_FILES,
    MnistDataError,
    Split,
    load_mnist,
    packaged_data_dir,
    resolve_root,
)
from l2l_mnist_data.safe_pickle import NumpyOnlyUnpickler, load_numpy_pickle

__all__ = [
    "ENV_VAR",
    "MNIST_FILES",
    "ClassificationStack",
    "ClassificationTask",
    "IdxFormatError",
    "ImageSet",
    "ImageSource",
    "MnistDataError",
    "NumpyOnlyUnpickler",
    "Split",
    "canonical_device",
    "decode_idx",
    "encode_idx",
    "load_mnist",
    "load_numpy_pickle",
    "mnist_image_set",
    "packaged_data_dir",
    "resolve_root",
    "to_unit_float",
    "write_idx_gz",
]
