"""CIFAR-10 end to end: a tiny folder in the real format, through `l2l meta-train --register`,
the evaluation, the registry (embedded MLflow in tmp) and back into a training loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient
from test_mnist_families import _write_cifar_dir  # the Python-2-pickle batches of the real files

from l2l_mnist_conv import load_cifar10
from l2l_plugin import LearnedOptimizer, make_family
from l2l_plugin.cli import main as l2l_main
from l2l_registry import conventions as c
from l2l_registry import load_optimizer
from l2l_registry import store as store_module

from helpers import TINY_META

# The smallest conv net the family builds on 32×32 colour images: seconds per meta-iteration.
TINY_CIFAR = {
    "dataset": "cifar10",
    "conv_channels": [4],
    "kernel_size": 3,
    "hidden_sizes": [8],
    "batch_size": 8,
    "eval_size": 40,
}
# The family's own defaults (l2l preset, one LSTM for the conv part) at test size.
TINY_RUN = {
    **{k: v for k, v in TINY_META.items() if k != "evaluation"},
    "meta_iterations": 4,
    "validation_every": 2,
    "evaluation": {"test_tasks": 3, "tuning_tasks": 2, "lr_min": 1e-2, "lr_max": 1.0, "lr_points_per_decade": 1},
}


def _assignments(flag: str, values: dict) -> list[str]:
    pairs: list[str] = []
    for key, value in values.items():
        if isinstance(value, dict):
            pairs += [f"{key}.{k}={json.dumps(v)}" for k, v in value.items()]
        else:
            pairs.append(f"{key}={json.dumps(value)}")
    return [part for pair in pairs for part in (flag, pair)]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    import mlflow

    data_dir = tmp_path_factory.mktemp("cifar-mlflow")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            mp.delenv(name, raising=False)
        mp.setenv(store_module.DATA_DIR_ENV, str(data_dir))
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        store_module._applied_default = None
        yield data_dir
        mlflow.set_tracking_uri(None)
        store_module._applied_default = None


@pytest.fixture(scope="module")
def registered(store_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cifar-data")
    _write_cifar_dir(root, per_batch=24)
    out = tmp_path_factory.mktemp("cifar-run") / "run"
    family = {**TINY_CIFAR, "data_dir": str(root)}
    argv = ["meta-train", "mnist_conv", "--out", str(out), "--register", "--quiet"]
    assert l2l_main(argv + _assignments("--set", family) + _assignments("--meta", TINY_RUN)) == 0
    return root, out


def test_meta_training_on_cifar10_is_evaluated_against_tuned_baselines(registered):
    _, out = registered
    report = json.loads((out / "evaluation.json").read_text())
    assert report["family"] == "mnist_conv" and report["family_config"]["dataset"] == "cifar10"
    assert {"learned", "sgd", "nag", "rmsprop", "adam"} <= set(report["optimizers"])
    for name, result in report["optimizers"].items():
        assert np.isfinite(result["final_loss_mean"]), name
        if name != "learned":
            assert result["lr"] is not None
    manifest = json.loads((out / "optimizer" / "optimizer.json").read_text())
    # The family's defaults reached the run: a separate LSTM for the conv parameters.
    assert [group["name"] for group in manifest["network"]["groups"]] == ["conv"]


def test_the_cifar10_optimizer_is_registered_with_its_config(registered, store_dir):
    client = MlflowClient()
    version = client.get_model_version(c.model_name("mnist_conv"), "1")
    assert version.tags[c.TAG_FAMILY] == "mnist_conv"
    run = client.get_run(version.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["family.dataset"] == "cifar10"
    assert {a.path for a in client.list_artifacts(version.run_id, "optimizer")} == {
        "optimizer/optimizer.json",
        "optimizer/weights.safetensors",
    }


def test_the_registered_optimizer_trains_a_cifar10_conv_net(registered, store_dir):
    root, _ = registered
    family = make_family("mnist_conv", {**TINY_CIFAR, "data_dir": str(root)})
    task = family.sample(12345)
    net = family_network(family)
    with torch.no_grad():
        for name, value in task.init_params("cpu").items():
            net.get_parameter(name).copy_(value)
    optimizer = load_optimizer("models:/l2l-mnist_conv/1", net.named_parameters(), family="mnist_conv")
    assert isinstance(optimizer, torch.optim.Optimizer) and isinstance(optimizer, LearnedOptimizer)

    images, labels = load_cifar10("train", root)
    x, y = images[:16].float() / 255.0, labels[:16]
    before = [p.detach().clone() for p in net.parameters()]
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step(loss=loss)
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))
    assert min(losses[1:]) < losses[0]


def family_network(family) -> torch.nn.Module:
    """A real (non-meta) module with the family's architecture, for an ordinary training loop."""
    from l2l_mnist_conv.family import CLASSES, IMAGE_GEOMETRY
    from l2l_mnist_conv.network import ConvNet

    channels, side = IMAGE_GEOMETRY[family.dataset]
    return ConvNet(
        channels,
        side,
        family.conv_channels,
        family.kernel_size,
        family.hidden_sizes,
        CLASSES,
        family.activation,
        family.batch_norm,
    )
