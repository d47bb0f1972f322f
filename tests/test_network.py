"""The coordinatewise LSTM network and its input preprocessing."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from l2l_plugin.optimizer import LSTMOptimizerNet, OptimizerNetConfig
from l2l_plugin.optimizer.network import Segments, gradient_features


def test_preprocessing_follows_the_paper():
    config = OptimizerNetConfig(preprocess_p=10.0)
    grad = torch.tensor([1.0, -math.exp(-5), 1e-6, -1e-6, 0.0])
    features = gradient_features(grad, config)
    assert features[0].tolist() == pytest.approx([0.0, 1.0])
    assert features[1].tolist() == pytest.approx([-0.5, -1.0])
    assert features[2].tolist() == pytest.approx([-1.0, math.exp(10) * 1e-6])  # below e^-p
    assert features[3].tolist() == pytest.approx([-1.0, -math.exp(10) * 1e-6])
    assert features[4].tolist() == pytest.approx([-1.0, 0.0])


def test_weights_are_shared_and_state_is_per_coordinate():
    net = LSTMOptimizerNet(OptimizerNetConfig())
    grad = torch.tensor([0.5, -0.5, 0.5])
    update, state = net("default", grad, net.initial_state(3, torch.device("cpu")))
    assert update[0] == update[2] and update[0] != update[1]
    assert state.lstm.shape == (4, 3, 20) and state.moments is None
    # Same input, different history: coordinate state matters.
    state.lstm[:, 0] += 1.0
    update2, _ = net("default", grad, state)
    assert update2[0] != update2[2]


def test_global_averaging_cells_share_their_activation_within_an_optimizee():
    net = LSTMOptimizerNet(OptimizerNetConfig(gac_cells=3))
    grad = torch.randn(6)
    segments = Segments.from_ids(torch.tensor([0, 0, 0, 1, 1, 1]), 2)
    _, state = net("default", grad, net.initial_state(6, torch.device("cpu")), segments=segments)
    hidden = state.lstm[0]  # first layer's h
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
    ],
)
def test_invalid_network_configs_give_field_errors(bad, field):
    with pytest.raises(ValidationError) as info:
        OptimizerNetConfig.model_validate(bad)
    if field is not None:
        assert info.value.errors()[0]["loc"] == field
