"""The same code on a GPU: every test here is marked ``cuda`` and skipped (with the reason) without one.

On a machine with CUDA: ``pytest -m cuda``. CI has no GPU, so these run on the GPU machine only.
"""

from __future__ import annotations

import pytest
import torch

from l2l_plugin import LearnedOptimizer, make_family
from l2l_plugin.artifacts import TrainedOptimizer
from l2l_plugin.optimizer import LSTMOptimizerNet, OptimizerNetConfig
from l2l_plugin.optimizer.rollout import run_learned
from l2l_plugin.training import meta_train

from helpers import tiny_config, untrained_optimizer

pytestmark = pytest.mark.cuda

NOMINAL = {"momentum_decays": [0.9, 0.5], "normalized_gradient": True, "update": "nominal", "nominal_lr": 0.01}


def _trained(network: dict) -> TrainedOptimizer:
    return untrained_optimizer(network)


def _params_after(device: str, trained: TrainedOptimizer, steps: int = 5) -> torch.Tensor:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1)).to(device)
    x = torch.randn(32, 16, device=device)
    optimizer = LearnedOptimizer(model.parameters(), trained)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = (model(x) - x.sum(1, keepdim=True)).square().mean()
        loss.backward()
        optimizer.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()


@pytest.mark.parametrize("network", [{}, NOMINAL, {**NOMINAL, "state_dtype": "bfloat16"}, {"gac_cells": 2}])
def test_learned_optimizer_on_cuda_equals_cpu(network):
    trained = _trained(network)
    on_cpu = _params_after("cpu", trained)
    on_gpu = _params_after("cuda", trained)
    torch.testing.assert_close(on_gpu, on_cpu, rtol=1e-4, atol=1e-5)
    assert next(trained.net.parameters()).device.type == "cpu"  # the shared net stays where it was


def test_in_place_step_on_cuda_equals_the_differentiable_forward():
    net = LSTMOptimizerNet(OptimizerNetConfig.model_validate(NOMINAL)).cuda()
    grad = torch.randn(100_000, device="cuda")
    state = net.initial_state(100_000, "cuda")
    reference, reference_state = net("default", grad, state, steps=3)
    update = net.step_("default", grad, state, steps=3)
    torch.testing.assert_close(update, reference.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(state.lstm, reference_state.lstm.detach(), rtol=1e-4, atol=1e-6)


def test_rollout_on_cuda_equals_cpu():
    net = _trained(NOMINAL).net
    stack = make_family("quadratic", {"dim": 8}).sample_stack([0, 1, 2])
    cpu_curve, _ = run_learned(net, stack, 10, torch.device("cpu"))
    gpu_curve, _ = run_learned(net.cuda(), stack, 10, torch.device("cuda"))
    torch.testing.assert_close(gpu_curve, cpu_curve, rtol=1e-4, atol=1e-6)


def test_meta_training_runs_on_cuda():
    result = meta_train(make_family("quadratic", {"dim": 5}), tiny_config(device="cuda"))
    assert result.device.startswith("cuda")
    assert all(torch.isfinite(p).all() for p in result.net.parameters())
    assert result.iterations == 6
