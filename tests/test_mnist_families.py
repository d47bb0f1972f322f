"""The MNIST data package and the mnist_mlp / mnist_conv families (tiny configs, seconds)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch.func import functional_call

from l2l_mnist_conv import Cifar10DataError, MnistConvFamily, load_cifar10
from l2l_mnist_data import ENV_VAR, MnistDataError, encode_idx, load_mnist, packaged_data_dir
from l2l_mnist_mlp import MnistMlpFamily
from l2l_plugin import check_family, discover_families, make_family
from l2l_plugin.cli import main as cli_main

TINY_MLP = {"hidden_sizes": [8], "batch_size": 16, "eval_size": 256}
TINY_CONV = {"conv_channels": [4, 4], "kernel_size": 3, "hidden_sizes": [8], "batch_size": 8, "eval_size": 64}


@pytest.fixture(autouse=True)
def _packaged_mnist_by_default(monkeypatch):
    # A developer's own $L2L_MNIST_DIR must not change what these tests read.
    monkeypatch.delenv(ENV_VAR, raising=False)


# --- writing small data sets in the real on-disk formats -------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX written independently of the package's encoder: magic 0x0000 08 ndim, dims, bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist_dir(
    folder: Path, n_train: int = 12, n_test: int = 6
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    splits = {
        "train": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), np.arange(n_train) % 10),
        "test": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), (np.arange(n_test) + 3) % 10),
    }
    folder.mkdir(parents=True, exist_ok=True)
    # Mixed on purpose: the standard names gzipped for one split, plain for the other.
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(splits["train"][0])))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(splits["train"][1])))
    (folder / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(splits["test"][0]))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(splits["test"][1]))
    return splits


class _Python2StylePickler(pickle._Pickler):
    """Pickles bytes and str as Python 2 ``str`` (BINSTRING), as cPickle wrote the CIFAR-10 files."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str
    dispatch[str] = _save_py2_str


def _py2_pickle(obj: object) -> bytes:
    import io

    buffer = io.BytesIO()
    _Python2StylePickler(buffer, protocol=2).dump(obj)
    # Numpy 1 named the reconstruction function's module numpy.core.multiarray, as the
    # original files do; GLOBAL is newline-delimited text, so renaming it is safe.
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _write_cifar_dir(root: Path, per_batch: int = 20) -> dict[str, list[tuple[np.ndarray, list[int]]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    written: dict[str, list[tuple[np.ndarray, list[int]]]] = {"train": [], "test": []}
    names = [(f"data_batch_{i}", "train") for i in range(1, 6)] + [("test_batch", "test")]
    for index, (name, split) in enumerate(names):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in (np.arange(per_batch) + index) % 10]
        batch = {
            b"batch_label": f"batch {index}".encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{index}_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(_py2_pickle(batch))
        written[split].append((data, labels))
    return written


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("cifar")
    return root, _write_cifar_dir(root)


# --- discovery and the contract --------------------------------------------------------------


def test_families_are_discovered_through_entry_points():
    families = discover_families()
    for name, distribution in [("mnist_mlp", "l2l-mnist-mlp"), ("mnist_conv", "l2l-mnist-conv")]:
        assert name in families, sorted(families)
        entry = families[name]
        assert entry.error is None
        assert entry.distribution.startswith(distribution)
        assert entry.description and "\n" not in entry.description


def test_cli_lists_the_mnist_families(capsys):
    assert cli_main(["families", "--json"]) == 0
    listing = {item["name"]: item for item in json.loads(capsys.readouterr().out)}
    assert listing["mnist_mlp"]["schema"]["properties"]["hidden_sizes"]["default"] == [20]
    assert listing["mnist_conv"]["schema"]["properties"]["dataset"]["enum"] == ["mnist", "cifar10"]


def test_mnist_mlp_passes_the_contract():
    check_family(make_family("mnist_mlp", TINY_MLP))


def test_mnist_mlp_paper_defaults_pass_the_contract():
    family = MnistMlpFamily()
    assert (family.hidden_sizes, family.activation, family.batch_size, family.init_scale) == (
        (20,),
        "sigmoid",
        128,
        0.01,
    )
    check_family(family)


def test_mnist_conv_passes_the_contract_on_mnist():
    check_family(make_family("mnist_conv", TINY_CONV))


def test_mnist_conv_passes_the_contract_on_cifar10(cifar_root):
    root, _ = cifar_root
    check_family(make_family("mnist_conv", {**TINY_CONV, "dataset": "cifar10", "data_dir": str(root)}))


def test_mnist_conv_without_batch_norm_passes_the_contract():
    check_family(MnistConvFamily(**{**TINY_CONV, "batch_norm": False, "batch_size": 1, "activation": "tanh"}))


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "family", [MnistMlpFamily(**TINY_MLP), MnistConvFamily(**TINY_CONV)], ids=["mlp", "conv"]
)
def test_same_seed_same_task_other_seed_other_task(family):
    a, b, c = family.sample(5), family.sample(5), family.sample(6)
    pa, pb, pc = a.init_params(), b.init_params(), c.init_params()
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not all(torch.equal(pa[k], pc[k]) for k in pa)
    for step in (0, 3, 99):
        assert torch.equal(a.loss(pa, step), b.loss(pb, step))
        # Same parameters, other seed: only the minibatch differs, and it does.
        assert not torch.equal(a.loss(pa, step), c.loss(pa, step))
    assert not torch.equal(a.loss(pa, 0), a.loss(pa, 1))
    assert torch.equal(a.eval_loss(pa), b.eval_loss(pb))


def test_the_family_config_is_hashable_and_json_friendly():
    family = MnistMlpFamily(hidden_sizes=[40, 20], activation="relu")
    assert hash(family) == hash(MnistMlpFamily.model_validate_json(family.model_dump_json()))
    assert json.loads(family.model_dump_json())["hidden_sizes"] == [40, 20]


# --- learning --------------------------------------------------------------------------------


def test_adam_lowers_the_mnist_mlp_training_and_held_out_loss():
    task = MnistMlpFamily(eval_size=2000).sample(0)
    params = {k: v.requires_grad_(True) for k, v in task.init_params().items()}
    optimizer = torch.optim.Adam(params.values(), lr=0.01)
    eval_before = task.eval_loss(params).item()
    losses = []
    for step in range(100):
        optimizer.zero_grad()
        loss = task.loss(params, step)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert eval_before == pytest.approx(np.log(10), abs=0.05)  # near-uniform predictions at N(0, 0.01²)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])
    assert task.eval_loss(params).item() < 0.5 * eval_before


def test_eval_loss_is_a_plain_number_without_gradient():
    task = MnistMlpFamily(**TINY_MLP).sample(0)
    params = {k: v.requires_grad_(True) for k, v in task.init_params().items()}
    held_out = task.eval_loss(params)
    assert held_out.dim() == 0 and not held_out.requires_grad


def test_softmax_regression_has_only_the_output_layer():
    task = MnistMlpFamily(
        hidden_sizes=[], **{k: v for k, v in TINY_MLP.items() if k != "hidden_sizes"}
    ).sample(0)
    assert sorted(task.init_params()) == ["fc1.bias", "fc1.weight"]


def test_train_size_restricts_the_minibatches_and_pixels_are_scaled_to_unit_range():
    task = MnistMlpFamily(train_size=1, batch_size=4).sample(0)
    params = task.init_params()
    images, labels = load_mnist("train")
    first = images[:1].float().unsqueeze(1) / 255.0
    expected = F.cross_entropy(functional_call(task.network, params, (first,)), labels[:1])
    assert torch.allclose(task.loss(params, 17), expected, atol=1e-6)


# --- the packaged data -----------------------------------------------------------------------


def test_packaged_mnist_has_the_classic_splits():
    train_images, train_labels = load_mnist("train")
    test_images, test_labels = load_mnist("test")
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert train_images.dtype == torch.uint8 and train_labels.dtype == torch.int64
    assert train_labels.shape == (60000,) and test_labels.shape == (10000,)
    for labels in (train_labels, test_labels):
        assert torch.equal(labels.unique(), torch.arange(10))
    assert train_labels[:5].tolist() == [5, 0, 4, 1, 9] and test_labels[:5].tolist() == [7, 2, 1, 0, 4]
    # The usual normalisation constants of MNIST's training set: mean 0.1307, std 0.3081.
    pixels = train_images.float() / 255.0
    assert pixels.mean().item() == pytest.approx(0.1307, abs=5e-4)
    assert pixels.std().item() == pytest.approx(0.3081, abs=5e-4)
    assert int(train_images.max()) == 255 and int(train_images.min()) == 0


def test_packaged_files_match_their_recorded_hashes_and_lecuns_originals():
    folder = packaged_data_dir()
    sums = dict(reversed(line.split()) for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert len(sums) == 4
    for name, digest in sums.items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    # Uncompressed, the files are byte-identical to LeCun's (MD5s published by many loaders).
    assert (
        hashlib.md5(encode_idx(load_mnist("test")[0].numpy())).hexdigest()
        == "2646ac647ad5339dbf082846283269ea"
    )
    assert hashlib.md5(encode_idx(load_mnist("train")[1].numpy().astype(np.uint8))).hexdigest() == (
        "a25bea736e30d166cdddb491f175f624"
    )
    assert "Yann LeCun" in (folder / "PROVENANCE.md").read_text()


def test_the_loader_is_cached_per_process():
    assert load_mnist("test")[0] is load_mnist("test", None)[0]


# --- user-supplied data ----------------------------------------------------------------------


def test_a_user_mnist_folder_is_read(tmp_path):
    written = _write_mnist_dir(tmp_path / "mnist")
    for split, (images, labels) in written.items():
        got_images, got_labels = load_mnist(split, tmp_path / "mnist")
        assert np.array_equal(got_images.numpy(), images)
        assert got_labels.tolist() == labels.tolist()


def test_a_user_mnist_folder_feeds_the_family(tmp_path):
    images, labels = _write_mnist_dir(tmp_path / "mnist")["test"]
    task = MnistMlpFamily(hidden_sizes=[5], data_dir=str(tmp_path / "mnist")).sample(1)
    params = task.init_params()
    pixels = torch.from_numpy(images).float().unsqueeze(1) / 255.0
    expected = F.cross_entropy(functional_call(task.network, params, (pixels,)), torch.from_numpy(labels))
    assert torch.allclose(task.eval_loss(params), expected, atol=1e-6)


def test_the_environment_variable_points_at_a_user_folder(tmp_path, monkeypatch):
    _write_mnist_dir(tmp_path / "mnist", n_train=11)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "mnist"))
    assert load_mnist("train")[0].shape == (11, 28, 28)
    check_family(MnistConvFamily(**TINY_CONV))


def test_torchvision_layout_is_found(tmp_path):
    _write_mnist_dir(tmp_path / "MNIST" / "raw", n_train=9)
    assert load_mnist("train", tmp_path)[0].shape == (9, 28, 28)


def test_a_missing_mnist_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MnistDataError, match="does not exist.*train-images-idx3-ubyte"):
        MnistMlpFamily(data_dir=str(tmp_path / "nowhere")).sample(0)


def test_a_missing_mnist_file_is_named(tmp_path):
    _write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(MnistDataError, match=r"t10k-labels-idx1-ubyte\[\.gz\] not found"):
        MnistMlpFamily(data_dir=str(tmp_path)).sample(0)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: raw[: len(raw) // 2], r"cannot read MNIST file .*train-images-idx3-ubyte\.gz"),
        (
            lambda raw: gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 12, 28, 28) + b"\x00" * 10),
            r"train-images-idx3-ubyte\.gz: IdxFormatError: IDX data of shape \(12, 28, 28\) needs 9408 bytes",
        ),
        (
            lambda raw: gzip.compress(_idx_bytes(np.zeros((12, 10, 10), np.uint8))),
            r"MNIST train split .* is not MNIST: images are torch.uint8 \(12, 10, 10\)",
        ),
        (lambda raw: b"not an idx file", r"not an IDX file"),
    ],
    ids=["truncated-gzip", "short-data", "not-28x28", "garbage"],
)
def test_a_corrupt_mnist_file_is_a_clear_error(tmp_path, damage, message):
    _write_mnist_dir(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(MnistDataError, match=message):
        load_mnist("train", tmp_path)


# --- CIFAR-10 --------------------------------------------------------------------------------


def test_cifar10_batches_are_read_in_their_layout(cifar_root):
    root, written = cifar_root
    images, labels = load_cifar10("train", root)
    assert images.shape == (100, 3, 32, 32) and images.dtype == torch.uint8
    data, batch_labels = written["train"][1]  # data_batch_2: rows 20..39
    # Each row is the red, then green, then blue 32×32 plane, row-major.
    assert np.array_equal(images[20, 0].numpy(), data[0, :1024].reshape(32, 32))
    assert np.array_equal(images[20, 2].numpy(), data[0, 2048:].reshape(32, 32))
    assert labels[20:40].tolist() == batch_labels
    test_images, _ = load_cifar10("test", root / "cifar-10-batches-py")
    assert test_images.shape == (20, 3, 32, 32)


def test_cifar10_family_sees_colour_images(cifar_root):
    root, _ = cifar_root
    task = MnistConvFamily(**{**TINY_CONV, "dataset": "cifar10", "data_dir": str(root)}).sample(0)
    assert task.init_params()["conv1.weight"].shape == (4, 3, 3, 3)


def test_cifar10_needs_a_data_dir():
    with pytest.raises(ValidationError) as info:
        MnistConvFamily(dataset="cifar10")
    assert [error["loc"] for error in info.value.errors()] == [("data_dir",)]


def test_a_missing_cifar10_batch_is_named(tmp_path):
    _write_cifar_dir(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(Cifar10DataError, match="data_batch_4 is missing"):
        MnistConvFamily(dataset="cifar10", data_dir=str(tmp_path)).sample(0)


def test_an_empty_cifar10_folder_lists_the_expected_files(tmp_path):
    with pytest.raises(Cifar10DataError, match="data_batch_1.*test_batch"):
        load_cifar10("train", tmp_path)


def test_a_cifar10_file_cannot_run_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Payload(), b"labels": [0]}, protocol=2))
    with pytest.raises(Cifar10DataError, match="refusing to load"):
        load_cifar10("test", tmp_path)
    assert not marker.exists()


# --- the conv net ----------------------------------------------------------------------------


def test_conv_parameter_names_separate_conv_and_fc_parts():
    names = list(MnistConvFamily().sample(0).init_params())
    assert names == [
        "conv1.weight", "conv1_bn.weight", "conv1_bn.bias",
        "conv2.weight", "conv2_bn.weight", "conv2_bn.bias",
        "conv3.weight", "conv3_bn.weight", "conv3_bn.bias",
        "fc1.weight", "fc1_bn.weight", "fc1_bn.bias",
        "fc2.weight", "fc2.bias",
    ]  # fmt: skip
    kernels = [n for n in names if re.fullmatch(r"conv\d+\.weight", n)]
    assert kernels == ["conv1.weight", "conv2.weight", "conv3.weight"]
    unnormalized = MnistConvFamily(batch_norm=False).sample(0).init_params()
    assert "conv1.bias" in unnormalized and not any("_bn." in n for n in unnormalized)


def test_batch_norm_is_functional():
    task = MnistConvFamily(**TINY_CONV).sample(0)
    assert list(task.network.buffers()) == []
    params = task.init_params()
    assert torch.equal(params["conv1_bn.weight"], torch.ones(4)) and torch.equal(
        params["fc1_bn.bias"], torch.zeros(8)
    )
    # Calling the loss twice gives the same value: nothing inside the network was updated.
    assert torch.equal(task.loss(params, 2), task.loss(params, 2))
    assert torch.equal(task.eval_loss(params), task.eval_loss(params))


def test_adam_lowers_the_mnist_conv_training_and_held_out_loss():
    task = MnistConvFamily(**{**TINY_CONV, "batch_size": 32}).sample(0)
    params = {k: v.requires_grad_(True) for k, v in task.init_params().items()}
    optimizer = torch.optim.Adam(params.values(), lr=0.01)
    eval_before = task.eval_loss(params).item()
    losses = []
    for step in range(60):
        optimizer.zero_grad()
        loss = task.loss(params, step)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    assert task.eval_loss(params).item() < 0.7 * eval_before


# --- validation ------------------------------------------------------------------------------


def test_invalid_mlp_configs_give_field_level_errors():
    with pytest.raises(ValidationError) as info:
        make_family(
            "mnist_mlp", {"hidden_sizes": [20, 0], "activation": "gelu", "batch_size": 0, "init_scale": -1}
        )
    locations = {error["loc"] for error in info.value.errors()}
    assert locations == {("hidden_sizes", 1), ("activation",), ("batch_size",), ("init_scale",)}


def test_invalid_conv_configs_give_field_level_errors():
    with pytest.raises(ValidationError) as info:
        make_family("mnist_conv", {"conv_channels": [], "dataset": "svhn", "kernel_size": 0, "eval_size": 1})
    locations = {error["loc"] for error in info.value.errors()}
    assert locations == {("conv_channels",), ("dataset",), ("kernel_size",), ("eval_size",)}


def test_batch_norm_needs_two_images_per_batch():
    with pytest.raises(ValidationError) as info:
        make_family("mnist_conv", {"batch_size": 1})
    assert [error["loc"] for error in info.value.errors()] == [("batch_size",)]
    assert make_family("mnist_conv", {"batch_size": 1, "batch_norm": False}).batch_size == 1


def test_unknown_fields_are_rejected():
    with pytest.raises(ValidationError) as info:
        make_family("mnist_mlp", {"layers": [20]})
    assert info.value.errors()[0]["loc"] == ("layers",)
