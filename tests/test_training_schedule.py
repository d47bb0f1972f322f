"""Meta-training levers: config distributions, random scaling, curricula and truncation offsets."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from l2l_plugin import make_family
from l2l_plugin.training import MetaTrainCallback, meta_train
from l2l_plugin.training.config import MetaTrainConfig
from l2l_plugin.training.distribution import (
    Choice,
    Range,
    ScaledTaskStack,
    check_distribution,
    sample_family,
    scaled_stack,
)
from l2l_plugin.training.unroll import unroll_lengths

from helpers import tiny_config

RICH_NET = {"preprocess_p": None, "momentum_decays": [0.9, 0.5], "normalized_gradient": True, "update": "nominal",
            "nominal_lr": 0.05, "progress_horizon": 10}


def test_family_configs_are_drawn_reproducibly_per_trajectory():
    family = make_family("quadratic", {"dim": 4})
    distribution = {"dim": Range(low=2, high=9, integer=True), "distribution": Choice(choices=("gaussian", "uniform"))}
    draws = [sample_family(family, distribution, seed=3, trajectory=t) for t in range(40)]
    assert draws == [sample_family(family, distribution, seed=3, trajectory=t) for t in range(40)]
    assert {d.dim for d in draws} == set(range(2, 10))
    assert {d.distribution for d in draws} == {"gaussian", "uniform"}
    assert draws != [sample_family(family, distribution, seed=4, trajectory=t) for t in range(40)]
    assert sample_family(family, {}, seed=3, trajectory=0) is family


def test_log_and_float_ranges_stay_inside_their_bounds():
    family = make_family("quadratic", {})
    draws = [sample_family(family, {"theta_init_std": Range(low=1e-3, high=1.0, log=True)}, 0, t).theta_init_std for t in range(200)]
    assert min(draws) >= 1e-3 and max(draws) <= 1.0
    assert sum(d < 0.0316 for d in draws) == pytest.approx(100, abs=30)  # log-uniform: half below the midpoint


def test_bad_distributions_are_clear_errors():
    family = make_family("quadratic", {})
    with pytest.raises(ValueError, match="no field 'dims'; fields: dim"):
        check_distribution(family, {"dims": Choice(choices=(3,))})
    with pytest.raises(ValueError, match="family_distribution.dim: 0 is not valid"):
        check_distribution(family, {"dim": Choice(choices=(3, 0))})
    with pytest.raises(ValueError, match="family_distribution.dim: .* is not valid"):  # draws would be fractional
        check_distribution(family, {"dim": Range(low=2, high=4)})
    check_distribution(family, {"dim": Range(low=2, high=4, integer=True)})
    with pytest.raises(ValidationError, match="below low"):
        MetaTrainConfig.model_validate({"family_distribution": {"dim": {"low": 5, "high": 2}}})
    with pytest.raises(ValueError, match="no field"):
        meta_train(family, tiny_config(family_distribution={"width": {"choices": [1]}}))


def test_random_scaling_changes_coordinates_not_the_function():
    family = make_family("quadratic", {"dim": 5})
    inner = family.sample_stack([1, 2])
    scaled = scaled_stack(inner, 3.0, seed=0, trajectory=7)
    assert isinstance(scaled, ScaledTaskStack) and scaled_stack(inner, 0.0, 0, 7) is inner
    phi = scaled.init_params()
    assert not torch.allclose(phi["theta"], inner.init_params()["theta"])
    assert torch.allclose(scaled.losses(phi), inner.losses(inner.init_params()), rtol=1e-5)
    phi = {"theta": phi["theta"].requires_grad_(True)}
    theta = {"theta": inner.init_params()["theta"].requires_grad_(True)}
    (grad_phi,) = torch.autograd.grad(scaled.losses(phi).sum(), [phi["theta"]])
    (grad_theta,) = torch.autograd.grad(inner.losses(theta).sum(), [theta["theta"]])
    scales = scaled._scales_on(torch.device("cpu"))["theta"]
    assert torch.allclose(grad_phi, grad_theta * scales, rtol=1e-5)  # chain rule: ∂f/∂φ = s ⊙ ∂f/∂θ
    assert scales.log().abs().max() <= 3.0 and scales.log().abs().max() > 2.0


def test_curriculum_and_truncation_offsets():
    config = MetaTrainConfig.model_validate(
        {"horizon_curriculum": [20, 40, 80], "unroll_length": 20, "meta_iterations": 90}
    )
    assert [config.horizon_at(f) for f in (0.0, 0.34, 0.7, 1.0)] == [20, 40, 80, 80]
    assert config.longest_horizon == 80  # the curriculum replaces horizon (100)
    assert config.validation_steps == 80 and config.evaluation_steps == 80
    MetaTrainConfig.model_validate({"horizon_curriculum": [30, 60], "unroll_length": 30})  # horizon 100 unchecked
    whole = MetaTrainConfig.model_validate({"unroll_length": None, "horizon": 70})
    assert unroll_lengths(whole, 70, 0) == [70]
    assert unroll_lengths(config, 80, 0) == [20, 20, 20, 20]

    offset = config.model_copy(update={"random_unroll_offset": True})
    firsts = {unroll_lengths(offset, 80, t)[0] for t in range(100)}
    assert firsts == set(range(1, 21))
    for t in range(20):
        lengths = unroll_lengths(offset, 80, t)
        assert sum(lengths) == 80 and all(1 <= n <= 20 for n in lengths)
    with pytest.raises(ValidationError, match="multiple of unroll_length"):
        MetaTrainConfig.model_validate({"horizon_curriculum": [30], "unroll_length": 20})
    MetaTrainConfig.model_validate({"horizon_curriculum": [30], "unroll_length": 20, "random_unroll_offset": True})
    with pytest.raises(ValidationError, match="step_weights cannot"):
        MetaTrainConfig.model_validate({"horizon_curriculum": [100], "step_weights": [1.0] * 100})


class _Horizons(MetaTrainCallback):
    def __init__(self) -> None:
        self.iterations: list[int] = []

    def on_iteration(self, progress) -> None:
        self.iterations.append(progress.iteration)


def test_meta_training_with_every_lever_is_reproducible_and_learns():
    family = make_family("quadratic", {"dim": 4})
    config = tiny_config(
        network=RICH_NET,
        horizon=10,
        horizon_curriculum=[5, 10],
        unroll_length=5,
        random_unroll_offset=True,
        random_scaling=1.0,
        family_distribution={"dim": {"low": 3, "high": 6, "integer": True}},
        meta_iterations=12,
        validation_every=4,
        meta_lr=1e-2,
        validation_metric="final_loss_mean",
    )
    counter = _Horizons()
    first = meta_train(family, config, callbacks=[counter])
    second = meta_train(family, config)
    assert first.iterations == 12 and counter.iterations == list(range(1, 13))
    for a, b in zip(first.net.state_dict().values(), second.net.state_dict().values()):
        assert torch.equal(a, b)
    start = next(h["validation_loss"] for h in first.history if "validation_loss" in h)
    assert first.best_validation_loss <= start
    assert first.net.nets["default"].log_lr.item() != pytest.approx(torch.log(torch.tensor(0.05)).item())


def test_warm_start_begins_at_the_tuned_nominal_rate():
    from l2l_plugin.training.warm_start import tuned_nominal_lr

    family = make_family("quadratic", {"dim": 4})
    network = {**RICH_NET, "nominal": "nesterov", "momentum_decays": [0.9], "progress_horizon": None}
    config = tiny_config(network=network, warm_start="tuned_nominal_lr", meta_iterations=2, meta_lr=1e-9)
    tuned = tuned_nominal_lr(family, config, torch.device("cpu"))
    result = meta_train(family, config)
    assert result.history[0] == {"iteration": 0, "warm_start_lr": tuned.lr}
    assert result.net.nets["default"].log_lr.item() == pytest.approx(math.log(tuned.lr), abs=1e-6)
    with pytest.raises(ValidationError, match="needs network.update 'nominal'"):
        tiny_config(warm_start="tuned_nominal_lr")


def test_presets_stack_beneath_family_defaults_and_overrides():
    from l2l_plugin.pipeline import resolve_meta_train_config
    from l2l_plugin.training.presets import PRESETS

    paper = MetaTrainConfig()
    assert paper.preset == "paper" and paper.network.update == "linear" and paper.network.preprocess_p == 10.0
    l2l = MetaTrainConfig.model_validate({"preset": "l2l"})
    assert l2l.network.update == "nominal" and l2l.warm_start == "tuned_nominal"
    assert MetaTrainConfig.model_validate({"preset": "l2l", "network": {"hidden_size": 8}}).network.update == "nominal"

    quadratic = make_family("quadratic", {})  # its defaults name the paper preset
    config = resolve_meta_train_config(quadratic, {"meta_iterations": 7})
    assert config.preset == "paper" and config.meta_batch_size == 32 and config.meta_iterations == 7
    switched = resolve_meta_train_config(quadratic, {"preset": "l2l"})
    assert switched.network.update == "nominal" and switched.meta_batch_size == 1  # family defaults dropped

    from helpers import TwoKindFamily

    bare = resolve_meta_train_config(TwoKindFamily(), {})  # no defaults: the library's preset
    assert bare.preset == "l2l" and bare.network.momentum_decays == tuple(PRESETS["l2l"]["network"]["momentum_decays"])
    with pytest.raises(ValidationError, match="preset"):
        MetaTrainConfig.model_validate({"preset": "adam2"})


def test_final_loss_steps_weight_only_the_end_of_the_horizon():
    config = MetaTrainConfig.model_validate({"final_loss_steps": 20, "unroll_length": 100})
    weights = config.step_weights_for(100)
    assert weights[:80] == (0.0,) * 80 and weights[80:] == (5.0,) * 20 and sum(weights) == 100
    assert config.step_weights_for(10) == (1.0,) * 10  # a shorter curriculum stage: all of it
    assert MetaTrainConfig().step_weights_for(3) == (1.0, 1.0, 1.0)
    with pytest.raises(ValidationError, match="not both"):
        MetaTrainConfig.model_validate({"final_loss_steps": 5, "step_weights": [1.0] * 100})


def test_tuned_nominal_warm_start_keeps_the_better_direction():
    from l2l_plugin.training.warm_start import tuned_nominal_lr

    family = make_family("quadratic", {"dim": 4})
    network = {**RICH_NET, "momentum_decays": [0.9], "progress_horizon": None}
    config = tiny_config(network=network, warm_start="tuned_nominal", meta_iterations=1, meta_lr=1e-9)
    result = meta_train(family, config)
    scores = {}
    for direction in ("adam", "nesterov"):
        candidate = config.model_copy(update={"network": config.network.model_copy(update={"nominal": direction})})
        scores[direction] = tuned_nominal_lr(family, candidate, torch.device("cpu"))
    best = min(scores, key=lambda d: scores[d].score)
    assert result.config.network.nominal == best and result.net.config.nominal == best
    assert result.net.nets["default"].log_lr.item() == pytest.approx(math.log(scores[best].lr), abs=1e-6)


def test_cosine_meta_lr_decays_over_the_run(tmp_path):
    from l2l_plugin.training.checkpoint import CHECKPOINT_NAME

    family = make_family("quadratic", {"dim": 3})
    config = tiny_config(network=RICH_NET, meta_lr_schedule="cosine", meta_iterations=6, meta_lr=1e-2)
    meta_train(family, config, checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    last_rate = saved["meta_optimizer"]["param_groups"][0]["lr"]
    assert last_rate == pytest.approx(1e-2 * 0.5 * (1 + math.cos(math.pi * 5 / 6)))  # set before step 6 of 6
    constant = meta_train(family, config.model_copy(update={"meta_lr_schedule": "constant"}), checkpoint_dir=tmp_path / "c")
    saved = torch.load(tmp_path / "c" / CHECKPOINT_NAME, weights_only=True)
    assert saved["meta_optimizer"]["param_groups"][0]["lr"] == 1e-2 and constant.iterations == 6


def test_unrolls_without_weight_take_no_meta_step(tmp_path):
    from l2l_plugin.training.checkpoint import CHECKPOINT_NAME

    family = make_family("quadratic", {"dim": 3})
    config = tiny_config(network=RICH_NET, horizon=10, unroll_length=5, final_loss_steps=5, meta_iterations=4)
    result = meta_train(family, config, checkpoint_dir=tmp_path)
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    iterations, trajectories = saved["counters"][:2]
    # Only the second unroll of each 10-step trajectory has weight: one meta-step per trajectory.
    assert result.iterations == iterations == 4 and trajectories == 4
    assert all(math.isfinite(h["meta_loss"]) and h["meta_loss"] > 0 for h in result.history if "meta_loss" in h)


def test_tail_loss_validation_averages_the_last_steps():
    from l2l_plugin.training.validation import validation_score

    curve = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [5.0, 4.0, 3.0, 2.0, 3.0]])
    config = MetaTrainConfig.model_validate({"validation_metric": "tail_loss_mean", "final_loss_steps": 2, "unroll_length": None})
    assert validation_score(curve, config) == pytest.approx((2 + 1 + 2 + 3) / 4)
    final = config.model_copy(update={"validation_metric": "final_loss_mean"})
    assert validation_score(curve, final) == pytest.approx(2.0)
