"""NTM-BFGS (network.kind 'ntm_bfgs'): its config, its outer-product memory against the dense
formula, per-optimizee reads, meta-gradients, the size cap, files, and the CLI into a registry."""

from __future__ import annotations

import json
import re

import mlflow
import pytest
import torch
from pydantic import ValidationError

from l2l_plugin import LearnedOptimizer
from l2l_plugin.artifacts import MANIFEST_NAME, load_trained_optimizer, save_trained_optimizer
from l2l_plugin.families import get_family
from l2l_plugin.optimizer import LSTMOptimizerNet, OptimizerNetConfig
from l2l_plugin.optimizer.config import MAX_MEMORY_FLOATS
from l2l_plugin.optimizer.cost import state_bytes_per_coordinate, step_work_per_coordinate
from l2l_plugin.optimizer.memory import MemoryTooLargeError
from l2l_plugin.optimizer.network import Segments
from l2l_plugin.optimizer.rollout import OptimizeeBatch

from helpers import TINY_META, untrained_optimizer

NTM = {"kind": "ntm_bfgs", "memory": {"slots": 3, "read_heads": 2, "write_heads": 2}}


def test_kind_defaults_to_lstm_and_old_manifests_load_unchanged():
    old = OptimizerNetConfig().model_dump()
    del old["kind"], old["memory"]  # what a manifest written before NTM-BFGS holds
    config = OptimizerNetConfig.model_validate(old)
    assert config.kind == "lstm" and config.memory is None and not config.couples_coordinates
    assert set(LSTMOptimizerNet(config).state_dict()) == set(LSTMOptimizerNet(OptimizerNetConfig()).state_dict())


def test_ntm_bfgs_records_its_memory_and_rejects_a_memory_elsewhere():
    config = OptimizerNetConfig(kind="ntm_bfgs")
    assert config.memory is not None and config.model_dump()["memory"]["slots"] == 8  # saved explicitly
    with pytest.raises(ValidationError, match="memory is only valid with kind 'ntm_bfgs'"):
        OptimizerNetConfig(memory={"slots": 2})
    with pytest.raises(ValidationError) as caught:
        OptimizerNetConfig(kind="ntm_bfgs", memory={"slots": 65, "read_heads": 0})
    assert {error["loc"] for error in caught.value.errors()} == {("memory", "slots"), ("memory", "read_heads")}
    with pytest.raises(ValidationError, match="'lstm' or 'ntm_bfgs'"):
        OptimizerNetConfig(kind="ntm")


def _dense_reads(written: list[torch.Tensor], keys: torch.Tensor, ids: torch.Tensor, config) -> torch.Tensor:
    """M r with M = Σ a bᵀ built as an n×n matrix per optimizee (over its coordinates, / n)."""
    memory = config.memory
    reads = torch.zeros_like(keys)
    for task in ids.unique():
        rows = (ids == task).nonzero().squeeze(1)
        n = rows.numel()
        matrix = torch.zeros(n, n)
        for vectors in written[-memory.slots :]:  # only the last `slots` steps are kept
            for head in range(memory.write_heads):
                a, b = vectors[head, rows], vectors[memory.write_heads + head, rows]
                matrix += torch.outer(a, b)
        reads[:, rows] = (matrix @ keys[:, rows].T).T / n * memory.read_scale
    return reads


def test_reads_equal_the_dense_outer_product_memory_per_optimizee():
    torch.manual_seed(0)
    config = OptimizerNetConfig.model_validate({**NTM, "memory": {**NTM["memory"], "read_scale": 0.7}})
    net = LSTMOptimizerNet(config)
    memory_module = net.nets["default"].memory
    ids = torch.tensor([0] * 5 + [1] * 7)
    segments = Segments.from_ids(ids, 2)
    memory = net.initial_state(ids.numel(), "cpu").memory
    written = []
    for _ in range(config.memory.slots + 2):  # past the window: the oldest writes must drop out
        hidden = torch.randn(config.hidden_size, ids.numel())
        vectors = torch.tanh(memory_module.interface(hidden.T).T)
        written.append(vectors[: 2 * config.memory.write_heads])
        reads, memory = memory_module(hidden, memory, segments.mean)
        expected = _dense_reads(written, vectors[2 * config.memory.write_heads :], ids, config)
        assert torch.allclose(reads, expected, atol=1e-5)
        assert torch.equal(memory[config.memory.history_rows :], reads)  # fed to the next step


def test_a_stack_of_optimizees_steps_each_as_if_alone():
    torch.manual_seed(1)
    net = LSTMOptimizerNet(OptimizerNetConfig.model_validate({**NTM, "gac_cells": 2}))
    grads = [torch.randn(4), torch.randn(6)]
    segments = Segments.from_ids(torch.tensor([0] * 4 + [1] * 6), 2)
    together = net.initial_state(10, "cpu")
    alone = [net.initial_state(g.numel(), "cpu") for g in grads]
    for _ in range(4):
        joint, together = net("default", torch.cat(grads), together, segments=segments)
        separate = []
        for index, grad in enumerate(grads):
            update, alone[index] = net("default", grad, alone[index])
            separate.append(update)
        assert torch.allclose(joint, torch.cat(separate), atol=1e-6)
    assert together.memory.abs().sum() > 0


def test_meta_gradients_reach_the_memory_heads_and_step_refuses_coupled_coordinates():
    torch.manual_seed(2)
    family = get_family("quadratic").model_validate({"dim": 4})
    net = LSTMOptimizerNet(OptimizerNetConfig.model_validate(NTM))
    batch = OptimizeeBatch(net, family.sample_stack([1, 2]), torch.device("cpu"))
    total = 0
    for step in range(3):
        losses = batch.losses(step)
        total = total + losses.sum()
        batch.step(losses, track_meta_gradient=True)
    total.backward()
    controller = net.nets["default"]
    assert controller.memory.interface.weight.grad.abs().sum() > 0
    assert controller.head.weight.grad[0, net.config.hidden_size :].abs().sum() > 0  # the head's read inputs
    with pytest.raises(ValueError, match="NTM-BFGS's memory need forward"):
        net.step_("default", torch.zeros(3), net.initial_state(3, "cpu"))


def test_memory_is_counted_in_the_state_and_capped_with_a_clear_error():
    lstm = LSTMOptimizerNet(OptimizerNetConfig())
    ntm = LSTMOptimizerNet(OptimizerNetConfig.model_validate(NTM))
    rows = 3 * 2 * 2 + 2  # slots × write heads × (a, b) + read heads
    assert ntm.state_bytes_per_coordinate() == lstm.state_bytes_per_coordinate() + 4 * rows
    too_many = MAX_MEMORY_FLOATS // rows + 1
    with pytest.raises(MemoryTooLargeError, match=r"at most [\d,]+ coordinates in one call.*memory\.slots"):
        ntm.initial_state(too_many, "meta")  # refused before anything is allocated


def test_save_load_and_learned_optimizer_reproduce_the_steps(tmp_path):
    trained = untrained_optimizer({**NTM, "loss_input": True})
    directory = save_trained_optimizer(tmp_path / "ntm", trained)
    assert json.loads((directory / MANIFEST_NAME).read_text())["network"]["kind"] == "ntm_bfgs"
    loaded = load_trained_optimizer(directory)
    assert loaded.net.config == trained.net.config

    def run(optimizer_of) -> list[torch.Tensor]:
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
        optimizer = optimizer_of(model)
        x = torch.randn(16, 3)
        for _ in range(4):
            optimizer.zero_grad()
            loss = (model(x) - x[:, :1]).square().mean()
            loss.backward()
            optimizer.step(loss=loss)
        return [p.detach().clone() for p in model.parameters()]

    original = run(lambda model: LearnedOptimizer(model.parameters(), trained))
    reloaded = run(lambda model: LearnedOptimizer(model.parameters(), loaded))
    assert all(torch.equal(a, b) for a, b in zip(original, reloaded))


def test_meta_train_with_the_cli_register_and_load_back(tmp_path, monkeypatch, capsys):
    from l2l_plugin.cli import main as l2l_main
    from l2l_registry import load_optimizer
    from l2l_registry import store as store_module

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.setenv(store_module.DATA_DIR_ENV, str(tmp_path / "mlflow"))  # an embedded store of its own
    meta = {**TINY_META, "meta_iterations": 3}
    args = ["meta-train", "quadratic", "--set", "dim=3", "--out", str(tmp_path / "run"), "--quiet", "--register"]
    args += ["--meta", "network.kind=ntm_bfgs", "--meta", "network.memory.slots=2"]
    for key, value in [*meta.items(), *((f"evaluation.{k}", v) for k, v in meta["evaluation"].items())]:
        if key != "evaluation":
            args += ["--meta", f"{key}={json.dumps(value)}"]
    try:
        assert l2l_main(args) == 0
        out = capsys.readouterr().out
        version = re.search(r"registered l2l-quadratic version (\d+)", out)
        assert version, out
        theta = torch.zeros(3, requires_grad=True)
        optimizer = load_optimizer(f"models:/l2l-quadratic/{version[1]}", [theta])
        assert isinstance(optimizer, torch.optim.Optimizer)
        assert optimizer.net.config.kind == "ntm_bfgs" and optimizer.net.config.memory.slots == 2
        target = torch.tensor([1.0, -2.0, 0.5])
        for _ in range(3):
            optimizer.zero_grad()
            loss = (theta - target).square().sum()
            loss.backward()
            optimizer.step(loss=loss)  # the quadratic family's recipe feeds the loss to the network
        assert not torch.equal(theta, torch.zeros(3)) and "memory" in optimizer.state[theta]
        manifest = json.loads((tmp_path / "run" / "optimizer" / MANIFEST_NAME).read_text())
        assert manifest["network"]["memory"]["slots"] == 2
        assert manifest["cost_profile"]["state_bytes_per_parameter"] == optimizer.net.state_bytes_per_coordinate()
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


@pytest.mark.parametrize(
    "network",
    [{}, {"state_dtype": "bfloat16", "momentum_decays": [0.9]}, NTM, {**NTM, "state_dtype": "bfloat16"}],
)
def test_the_config_level_cost_matches_the_net(network):
    config = OptimizerNetConfig.model_validate(network)
    assert state_bytes_per_coordinate(config) == LSTMOptimizerNet(config).state_bytes_per_coordinate()
    lstm_work = step_work_per_coordinate(OptimizerNetConfig.model_validate({**network, "kind": "lstm", "memory": None}))
    assert (step_work_per_coordinate(config) > lstm_work) == (config.memory is not None)
