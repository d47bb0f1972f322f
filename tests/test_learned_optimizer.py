"""LearnedOptimizer as a torch.optim.Optimizer, and a trained optimizer's files."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from l2l_plugin import LearnedOptimizer, load_trained_optimizer, make_family
from l2l_plugin.artifacts import (
    MANIFEST_NAME,
    WEIGHTS_NAME,
    OptimizerFilesError,
    OptimizerManifest,
    Provenance,
    TrainedOptimizer,
    save_trained_optimizer,
)
from l2l_plugin.optimizer import LSTMOptimizerNet, OptimizerNetConfig
from l2l_plugin.optimizer.rollout import run_learned

from helpers import tiny_config


def _trained(network: dict | None = None, seed: int = 0) -> TrainedOptimizer:
    torch.manual_seed(seed)
    config = OptimizerNetConfig.model_validate(network or {})
    net = LSTMOptimizerNet(config)
    with torch.no_grad():  # make the head produce visible steps
        for sub in net.nets.values():
            sub.head.weight.normal_(std=0.5)
    manifest = OptimizerManifest(
        network=config,
        family="quadratic",
        family_config={"dim": 5},
        meta_training=tiny_config().model_dump(mode="json"),
        provenance=Provenance(library_version="test"),
    )
    return TrainedOptimizer(manifest, net)


def _model() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _loss(model: torch.nn.Module) -> torch.Tensor:
    x = torch.linspace(-1, 1, 32).reshape(8, 4).to(next(model.parameters()).dtype)
    return (model(x) - x.sum(dim=1, keepdim=True)).square().mean()


def _train(model, optimizer, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        loss = _loss(model)
        loss.backward()
        optimizer.step(loss=loss) if isinstance(optimizer, LearnedOptimizer) else optimizer.step()


def test_files_round_trip_and_load_without_pickle(tmp_path):
    trained = _trained({"gac_cells": 2})
    directory = save_trained_optimizer(tmp_path / "opt", trained)
    assert sorted(p.name for p in directory.iterdir()) == [MANIFEST_NAME, WEIGHTS_NAME]
    assert json.loads((directory / MANIFEST_NAME).read_text())["network"]["gac_cells"] == 2
    weights = load_file(str(directory / WEIGHTS_NAME))  # safetensors: no code runs on load
    for key, value in trained.net.state_dict().items():
        assert torch.equal(weights[key], value)
    loaded = load_trained_optimizer(directory)
    assert loaded.manifest == trained.manifest


def test_missing_or_mismatched_files_are_clear_errors(tmp_path):
    with pytest.raises(OptimizerFilesError, match="optimizer.json is missing"):
        load_trained_optimizer(tmp_path)
    directory = save_trained_optimizer(tmp_path / "opt", _trained())
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["network"]["hidden_size"] = 7
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(OptimizerFilesError, match="does not match the architecture"):
        load_trained_optimizer(directory)


RICH_NETWORK = {
    "momentum_decays": [0.9, 0.5],
    "normalized_gradient": True,
    "param_input": True,
    "progress_horizon": 10,
    "loss_input": True,
    "gac_cells": 2,
}
NOMINAL_NETWORK = {**RICH_NETWORK, "update": "nominal", "nominal_lr": 0.01}


@pytest.mark.parametrize(
    "network", [{}, {"loss_input": True, "gac_cells": 3}, RICH_NETWORK, NOMINAL_NETWORK, {**RICH_NETWORK, "update": "tanh"}]
)
def test_trains_in_an_ordinary_loop(network):
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), _trained(network))
    before = _loss(model).item()
    _train(model, optimizer, 5)
    assert _loss(model).item() != before
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(optimizer.state) == 4 and all(s["step"] == 5 for s in optimizer.state.values())


@pytest.mark.parametrize("network", [{"loss_input": True, "gac_cells": 2}, NOMINAL_NETWORK])
def test_state_dict_round_trip_reproduces_the_next_step_exactly(tmp_path, network):
    trained = _trained(network)
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), trained)
    _train(model, optimizer, 3)
    torch.save(optimizer.state_dict(), tmp_path / "opt.pt")
    twin = copy.deepcopy(model)

    _train(model, optimizer, 1)
    restored = LearnedOptimizer(twin.parameters(), trained)
    restored.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    _train(twin, restored, 1)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "network", [{"preprocess_p": None, "loss_input": True, "gac_cells": 2}, {**NOMINAL_NETWORK, "preprocess_p": None}]
)
def test_matches_the_batched_rollout_used_in_meta_training_and_evaluation(network):
    trained = _trained(network)
    family = make_family("quadratic", {"dim": 6})
    curve, _ = run_learned(trained.net, family.sample_stack([4]), 8, torch.device("cpu"))

    task = family.sample(4)
    theta = task.init_params()["theta"].requires_grad_(True)
    optimizer = LearnedOptimizer([theta], trained)
    losses = []
    for step in range(8):
        optimizer.zero_grad()
        loss = task.loss({"theta": theta}, step)
        losses.append(loss.item())
        loss.backward()
        optimizer.step(loss=loss)
    losses.append(task.loss({"theta": theta}, 8).item())
    assert losses == pytest.approx(curve[0].tolist(), rel=1e-5)


def test_untrained_nominal_optimizer_is_adam():
    """With a zero head, update 'nominal' is exactly Adam at nominal_lr (Harrison et al. 2022)."""
    trained = _trained({"momentum_decays": [0.8, 0.5], "rms_decay": 0.99, "update": "nominal", "nominal_lr": 0.03})
    with torch.no_grad():
        trained.net.nets["default"].head.weight.zero_()
    learned_model, adam_model = _model(), _model()
    _train(learned_model, LearnedOptimizer(learned_model.parameters(), trained), 6)
    _train(adam_model, torch.optim.Adam(adam_model.parameters(), lr=0.03, betas=(0.8, 0.99), eps=1e-8), 6)
    for a, b in zip(learned_model.parameters(), adam_model.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_untrained_nesterov_nominal_optimizer_is_torch_nag():
    trained = _trained({"momentum_decays": [0.9], "update": "nominal", "nominal": "nesterov", "nominal_lr": 0.05})
    with torch.no_grad():
        trained.net.nets["default"].head.weight.zero_()
    learned_model, nag_model = _model(), _model()
    _train(learned_model, LearnedOptimizer(learned_model.parameters(), trained), 6)
    _train(nag_model, torch.optim.SGD(nag_model.parameters(), lr=0.05, momentum=0.9, nesterov=True), 6)
    for a, b in zip(learned_model.parameters(), nag_model.parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_tanh_update_is_bounded_by_the_output_scale():
    trained = _trained({"update": "tanh", "output_scale": 0.01})
    with torch.no_grad():
        trained.net.nets["default"].head.weight.mul_(1000)
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, LearnedOptimizer(model.parameters(), trained), 1)
    steps = torch.cat([(p - b).reshape(-1) for p, b in zip(model.parameters(), before)])
    assert steps.abs().max() <= 0.01 + 1e-7 and steps.abs().max() > 0.005


def test_parameters_that_skip_steps_keep_their_own_step_count():
    trained = _trained(RICH_NETWORK)
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), trained)
    _train(model, optimizer, 2)
    model[2].weight.requires_grad_(False)
    _train(model, optimizer, 1)
    model[2].weight.requires_grad_(True)
    _train(model, optimizer, 1)
    assert optimizer.state[model[0].weight]["step"] == 4 and optimizer.state[model[2].weight]["step"] == 3


def test_a_shared_net_is_not_moved_by_an_optimizer():
    trained = _trained()
    params = [torch.zeros(3, requires_grad=True, device="meta")]
    optimizer = LearnedOptimizer(params, trained)
    assert optimizer._net_on(torch.device("meta")) is not trained.net
    assert next(trained.net.parameters()).device.type == "cpu"


def test_named_parameters_select_the_group_lstm():
    trained = _trained({"groups": [{"name": "first", "pattern": r"^0\."}]})
    with torch.no_grad():
        trained.net.nets["first"].head.weight.zero_()  # the 'first' LSTM never moves its parameters
    model = _model()
    first_before = model[0].weight.detach().clone()
    last_before = model[2].weight.detach().clone()
    _train(model, LearnedOptimizer(model.named_parameters(), trained), 2)
    assert torch.equal(model[0].weight, first_before)
    assert not torch.equal(model[2].weight, last_before)

    with pytest.warns(UserWarning, match="named_parameters"):
        LearnedOptimizer(_model().parameters(), trained)


def test_parameters_without_gradients_are_skipped():
    model = _model()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    optimizer = LearnedOptimizer(model.parameters(), _trained())
    _train(model, optimizer, 2)
    assert torch.equal(model[0].weight, frozen)
    assert model[0].weight not in optimizer.state


def test_lr_scales_the_update_and_is_validated():
    with pytest.raises(ValueError, match="Invalid learning rate"):
        LearnedOptimizer(_model().parameters(), _trained(), lr=0.0)
    full, half = _model(), _model()
    start = [p.detach().clone() for p in full.parameters()]
    _train(full, LearnedOptimizer(full.parameters(), _trained()), 1)
    _train(half, LearnedOptimizer(half.parameters(), _trained(), lr=0.5), 1)
    for s, f, h in zip(start, full.parameters(), half.parameters()):
        assert torch.allclose(h - s, 0.5 * (f - s), atol=1e-7)


def test_bad_gradients_and_missing_loss_are_clear_errors():
    embedding = torch.nn.Embedding(10, 3, sparse=True)
    optimizer = LearnedOptimizer(embedding.parameters(), _trained())
    embedding(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        optimizer.step()

    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), _trained({"loss_input": True}))
    _loss(model).backward()
    with pytest.raises(ValueError, match="step\\(closure\\)"):
        optimizer.step()
    optimizer.step(lambda: _loss(model))  # a closure provides it


def test_loads_from_a_directory(tmp_path):
    directory = save_trained_optimizer(tmp_path / "opt", _trained())
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), directory)
    _train(model, optimizer, 1)
    assert optimizer.trained.manifest.family == "quadratic"


def _loss_curve(network: dict, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    model = _model()
    optimizer = LearnedOptimizer(model.parameters(), _trained(network))
    curve = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = _loss(model)
        loss.backward()
        curve.append(loss.item())
        optimizer.step(loss=loss)
    return torch.tensor(curve), torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("network", [{}, {**NOMINAL_NETWORK, "gac_cells": 0}, RICH_NETWORK])
def test_bfloat16_state_stays_within_one_percent_of_float32_over_100_steps(network):
    # Measured: at most 0.4% apart on these loss curves (benchmarks/step_cost.py times both).
    fp32_curve, fp32_params = _loss_curve({**network, "state_dtype": "float32"}, 100)
    bf16_curve, bf16_params = _loss_curve({**network, "state_dtype": "bfloat16"}, 100)
    assert not torch.equal(fp32_curve, bf16_curve)  # the option really changes the storage
    assert ((bf16_curve - fp32_curve).abs() / fp32_curve).max() < 0.01
    assert (bf16_params - fp32_params).norm() / fp32_params.norm() < 0.01


def test_parameters_stepped_alone_in_place_equal_one_shared_call(monkeypatch):
    import l2l_plugin.optimizer.learned_optimizer as learned

    results = []
    for threshold in (1, 10**9):  # every tensor alone (in place) / every tensor in one call
        monkeypatch.setattr(learned, "_SHARED_CALL_BELOW", threshold)
        model = _model()
        _train(model, LearnedOptimizer(model.parameters(), _trained({**NOMINAL_NETWORK, "gac_cells": 0})), 4)
        results.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)
