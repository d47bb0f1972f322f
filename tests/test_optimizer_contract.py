"""One contract, every optimizer: each network config × parameter dtype × state dtype goes
through the same checks (as optax runs one suite over all of its optimizers)."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from l2l_plugin import LearnedOptimizer
from l2l_plugin.artifacts import TrainedOptimizer

from helpers import untrained_optimizer

MOMENTS = {"momentum_decays": [0.9, 0.5], "normalized_gradient": True}
NETWORKS = {
    "paper": {},
    "raw gradient + loss input": {"preprocess_p": None, "loss_input": True},
    "nominal adam": {**MOMENTS, "update": "nominal", "nominal_lr": 0.01},
    "nominal nesterov": {**MOMENTS, "update": "nominal", "nominal": "nesterov", "nominal_lr": 0.01},
    "tanh": {**MOMENTS, "update": "tanh"},
    "averaging cells": {"gac_cells": 2, "loss_input": True},
    "param + progress inputs": {**MOMENTS, "param_input": True, "progress_horizon": 10},
    "groups": {"groups": [{"name": "bias", "pattern": r"bias$"}]},
    "ntm_bfgs": {"kind": "ntm_bfgs", "memory": {"slots": 2}},
    "ntm_bfgs, heads + averaging + groups": {
        **MOMENTS,
        "kind": "ntm_bfgs",
        "memory": {"slots": 3, "read_heads": 2, "write_heads": 2},
        "gac_cells": 2,
        "loss_input": True,
        "groups": [{"name": "bias", "pattern": r"bias$"}],
    },
}
PARAM_DTYPES = [torch.float32, torch.bfloat16, torch.float64]
STATE_DTYPES = ["float32", "bfloat16"]


def _trained(network: dict, state_dtype: str) -> TrainedOptimizer:
    return untrained_optimizer({**network, "state_dtype": state_dtype})


def _model(dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(dtype)


def _steps(model: torch.nn.Module, optimizer: LearnedOptimizer, count: int) -> None:
    x = torch.linspace(-1, 1, 32, dtype=next(model.parameters()).dtype).reshape(8, 4)
    for _ in range(count):
        optimizer.zero_grad()
        loss = (model(x) - x.sum(1, keepdim=True)).square().mean()
        loss.backward()
        optimizer.step(loss=loss)


@pytest.mark.parametrize("state_dtype", STATE_DTYPES)
@pytest.mark.parametrize("param_dtype", PARAM_DTYPES, ids=str)
@pytest.mark.parametrize("network", list(NETWORKS))
def test_optimizer_contract(network, param_dtype, state_dtype):
    trained = _trained(NETWORKS[network], state_dtype)
    model = _model(param_dtype)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = LearnedOptimizer(model.named_parameters(), trained)
    _steps(model, optimizer, 3)

    # It moves every parameter, keeps it finite and in its dtype.
    for start, p in zip(before, model.parameters()):
        assert p.dtype == param_dtype and torch.isfinite(p).all() and not torch.equal(start, p)
    # State: one entry per parameter, the LSTM state in the configured dtype, moments in float32.
    assert len(optimizer.state) == len(before)
    for p, state in optimizer.state.items():
        assert state["step"] == 3
        assert state["lstm_state"].dtype == trained.net.lstm_state_dtype
        assert state["lstm_state"].shape[-1] == p.numel()
        assert ("moments" in state) == trained.net.config.uses_moments
        assert "moments" not in state or state["moments"].dtype == torch.float32
        assert ("memory" in state) == (trained.net.config.memory is not None)
        assert "memory" not in state or (state["memory"].dtype == torch.float32 and state["memory"].any())

    # A state_dict round trip (through torch.save) reproduces the next step exactly.
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    twin = copy.deepcopy(model)
    _steps(model, optimizer, 1)
    buffer.seek(0)
    restored = LearnedOptimizer(twin.named_parameters(), trained)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    _steps(twin, restored, 1)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
