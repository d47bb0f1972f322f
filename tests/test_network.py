"""The coordinatewise LSTM network and its input preprocessing."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from l2l_plugin.optimizer import LSTMOptimizerNet, OptimizerNetConfig
from l2l_plugin.optimizer.features import gradient_features
from l2l_plugin.optimizer.lstm_cell import lstm_cell
from l2l_plugin.optimizer.network import Segments


def test_preprocessing_follows_the_paper():
    config = OptimizerNetConfig(preprocess_p=10.0)
    grad = torch.tensor([1.0, -math.exp(-5), 1e-6, -1e-6, 0.0])
    features = gradient_features(grad, config)
    features = features.T
    assert features[0].tolist() == pytest.approx([0.0, 1.0])
    assert features[1].tolist() == pytest.approx([-0.5, -1.0])
    assert features[2].tolist() == pytest.approx([-1.0, math.exp(10) * 1e-6])  # below e^-p
    assert features[3].tolist() == pytest.approx([-1.0, -math.exp(10) * 1e-6])
    assert features[4].tolist() == pytest.approx([-1.0, 0.0])


def test_weights_are_shared_and_state_is_per_coordinate():
    net = LSTMOptimizerNet(OptimizerNetConfig())
    grad = torch.tensor([0.5, -0.5, 0.5])
    update, state = net("default", grad, net.initial_state(3, torch.device("cpu")))
    assert torch.allclose(update[0], update[2], rtol=1e-6) and not torch.allclose(update[0], update[1])
    assert state.lstm.shape == (4, 20, 3) and state.moments is None
    # Same input, different history: coordinate state matters.
    state.lstm[:, :, 0] += 1.0
    update2, _ = net("default", grad, state)
    assert not torch.allclose(update2[0], update2[2])


def test_global_averaging_cells_share_their_activation_within_an_optimizee():
    net = LSTMOptimizerNet(OptimizerNetConfig(gac_cells=3))
    grad = torch.randn(6)
    segments = Segments.from_ids(torch.tensor([0, 0, 0, 1, 1, 1]), 2)
    _, state = net("default", grad, net.initial_state(6, torch.device("cpu")), segments=segments)
    hidden = state.lstm[0].T  # first layer's h, a row per coordinate
    assert torch.allclose(hidden[0, :3], hidden[2, :3]) and torch.allclose(hidden[3, :3], hidden[5, :3])
    assert not torch.allclose(hidden[0, :3], hidden[3, :3])  # but not across optimizees
    assert not torch.allclose(hidden[0, 3:], hidden[1, 3:])


def test_group_rules_assign_parameters():
    config = OptimizerNetConfig(groups=[{"name": "conv", "pattern": r"conv\d*\."}])
    assert config.group_of("conv1.weight") == "conv"
    assert config.group_of("fc1.weight") == "default"
    assert set(LSTMOptimizerNet(config).nets) == {"conv", "default"}


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"gac_cells": 30}, None),
        ({"groups": [{"name": "x", "pattern": "("}]}, ("groups", 0, "pattern")),
        ({"hidden_size": 0}, ("hidden_size",)),
        ({"output_scale": -1}, ("output_scale",)),
        ({"update": "nominal"}, None),  # needs momentum_decays
        ({"gradient_input": False}, None),  # no inputs at all
        ({"momentum_decays": [1.0]}, ("momentum_decays", 0)),
        ({"update": "adamw"}, ("update",)),
    ],
)
def test_invalid_network_configs_give_field_errors(bad, field):
    with pytest.raises(ValidationError) as info:
        OptimizerNetConfig.model_validate(bad)
    if field is not None:
        assert info.value.errors()[0]["loc"] == field


def test_moment_inputs_are_bias_corrected_adam_statistics():
    config = OptimizerNetConfig(momentum_decays=(0.9, 0.5), rms_decay=0.99, normalized_gradient=True, gradient_input=False)
    net = LSTMOptimizerNet(config)
    grads = [torch.tensor([0.3, -2.0]), torch.tensor([0.1, 1.0]), torch.tensor([-0.2, 0.5])]
    state = net.initial_state(2, "cpu")
    moments = state.moments
    for t, grad in enumerate(grads):
        features, moments, nominal = net.features(grad, moments, torch.tensor(t), None, None)
    steps = len(grads)
    v = sum((1 - 0.99) * 0.99 ** (steps - 1 - k) * g.square() for k, g in enumerate(grads)) / (1 - 0.99**steps)
    for column, beta in enumerate((0.9, 0.5)):
        m = sum((1 - beta) * beta ** (steps - 1 - k) * g for k, g in enumerate(grads)) / (1 - beta**steps)
        assert torch.allclose(features[column], m / (v.sqrt() + 1e-8), rtol=1e-5)
    assert torch.allclose(features[2], grads[-1] / (v.sqrt() + 1e-8), rtol=1e-5)
    assert torch.equal(nominal[0], features[0])


def test_feature_count_follows_the_config():
    config = OptimizerNetConfig(
        momentum_decays=(0.9, 0.99, 0.5), normalized_gradient=True, param_input=True, progress_horizon=100, loss_input=True
    )
    assert config.num_features == 2 + 3 + 1 + 1 + 1 + 1
    net = LSTMOptimizerNet(config)
    grad = torch.randn(5)
    update, state = net(
        "default", grad, net.initial_state(5, "cpu"), steps=3, param=torch.randn(5), loss_rows=torch.zeros(5)
    )
    assert update.shape == (5,) and state.moments.shape == (4, 5)
    with pytest.raises(ValueError, match="param_input"):
        net("default", grad, net.initial_state(5, "cpu"), loss_rows=torch.zeros(5))


def test_paper_config_has_the_papers_state_dict():
    """Old trained optimizers (paper architecture) still load: no new weights appear."""
    keys = set(LSTMOptimizerNet(OptimizerNetConfig()).state_dict())
    assert not any("log_lr" in key for key in keys)
    assert "log_lr" in "".join(LSTMOptimizerNet(OptimizerNetConfig(update="nominal", momentum_decays=(0.9,))).state_dict())


def test_fused_cell_equals_torch_lstm_cell_forward_and_backward():
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(5, 7)
    x, h, c = torch.randn(40, 5, requires_grad=True), torch.randn(40, 7), torch.randn(40, 7)
    ref_h, ref_c = cell(x, (h, c))
    ref_loss = (ref_h * torch.linspace(-1, 1, 7)).sum() + ref_c.square().sum()
    ref_grads = torch.autograd.grad(ref_loss, [x, *cell.parameters()])
    xt = x.detach().T.contiguous().requires_grad_(True)
    fused_h, fused_c = lstm_cell(xt, h.T.contiguous(), c.T.contiguous(), cell)
    assert torch.allclose(fused_h.T, ref_h, atol=1e-6) and torch.allclose(fused_c.T, ref_c, atol=1e-6)
    fused_loss = (fused_h.T * torch.linspace(-1, 1, 7)).sum() + fused_c.square().sum()
    fused_grads = torch.autograd.grad(fused_loss, [xt, *cell.parameters()])
    assert torch.allclose(fused_grads[0].T, ref_grads[0], atol=1e-5)
    for a, b in zip(fused_grads[1:], ref_grads[1:]):
        assert torch.allclose(a, b, atol=1e-5)


def test_fused_cell_backward_passes_gradcheck_through_every_input():
    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(3, 4).double()
    x = torch.randn(3, 6, dtype=torch.double, requires_grad=True)
    h = torch.randn(4, 6, dtype=torch.double, requires_grad=True)
    c = torch.randn(4, 6, dtype=torch.double, requires_grad=True)

    def both_outputs(x, h, c, *weights):
        return lstm_cell(x, h, c, _Cell(*weights))

    params = [p.detach().clone().requires_grad_(True) for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    assert torch.autograd.gradcheck(both_outputs, (x, h, c, *params))


class _Cell:
    """The four tensors lstm_cell reads from an nn.LSTMCell, as plain attributes."""

    def __init__(self, weight_ih, weight_hh, bias_ih, bias_hh) -> None:
        self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh = weight_ih, weight_hh, bias_ih, bias_hh


@pytest.mark.parametrize("per_row_steps", [False, True])
def test_in_place_chunked_step_equals_the_differentiable_forward(monkeypatch, per_row_steps):
    import l2l_plugin.optimizer.network as network

    config = OptimizerNetConfig(momentum_decays=(0.9, 0.5), normalized_gradient=True, update="nominal", param_input=True)
    net = LSTMOptimizerNet(config)
    with torch.no_grad():
        for cell in net.nets["default"].cells:  # a state that is not all zeros
            cell.bias_ih.normal_()
    grad, param = torch.randn(1000), torch.randn(1000)
    steps = torch.randint(0, 5, (1000,)) if per_row_steps else 2
    state = net.initial_state(1000, "cpu")
    state.lstm.normal_()
    state.moments.uniform_(0.1, 1.0)
    reference, reference_state = net("default", grad, state, steps=steps, param=param)  # with a graph

    monkeypatch.setattr(network, "NO_GRAD_CHUNK", 128)
    lstm, moments = state.lstm, state.moments
    update = net.step_("default", grad, state, steps=steps, param=param)
    assert state.lstm is lstm and state.moments is moments  # written over, not replaced
    torch.testing.assert_close(update, reference.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(lstm, reference_state.lstm.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(moments, reference_state.moments.detach(), rtol=1e-6, atol=0)


def test_in_place_step_refuses_averaging_cells():
    net = LSTMOptimizerNet(OptimizerNetConfig(gac_cells=2))
    with pytest.raises(ValueError, match="averaging cells"):
        net.step_("default", torch.randn(4), net.initial_state(4, "cpu"))


def test_bfloat16_state_halves_the_lstm_state_and_keeps_moments_float32():
    fp32 = LSTMOptimizerNet(OptimizerNetConfig(momentum_decays=(0.9,)))
    bf16 = LSTMOptimizerNet(OptimizerNetConfig(momentum_decays=(0.9,), state_dtype="bfloat16"))
    state = bf16.initial_state(7, "cpu")
    assert state.lstm.dtype == torch.bfloat16 and state.moments.dtype == torch.float32
    assert fp32.state_bytes_per_coordinate() == 4 * (2 * 2 * 20 + 2)
    assert bf16.state_bytes_per_coordinate() == 2 * (2 * 2 * 20) + 4 * 2
