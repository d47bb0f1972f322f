"""Meta-training: learning, checkpoint/resume, non-finite steps, per-group nets and GAC."""

from __future__ import annotations

import pytest
import torch

from l2l_plugin import make_family
from l2l_plugin.training import (
    MetaTrainCallback,
    MetaTrainingCancelled,
    MetaTrainingDiverged,
    meta_train,
)
from l2l_plugin.training.checkpoint import CHECKPOINT_NAME
from l2l_plugin.training.seeds import held_out_seeds, training_seed, validation_seeds

from helpers import TwoKindFamily, tiny_config

QUADRATIC_NET = {"preprocess_p": None, "loss_input": True, "output_scale": 0.1}


def test_short_meta_training_lowers_the_validation_loss():
    family = make_family("quadratic", {"dim": 5})
    config = tiny_config(
        network=QUADRATIC_NET, meta_iterations=60, validation_every=30, meta_lr=3e-3, meta_batch_size=16
    )
    result = meta_train(family, config)
    validations = [h["validation_loss"] for h in result.history if "validation_loss" in h]
    assert len(validations) == 3
    assert result.best_validation_loss < 0.7 * validations[0], validations
    assert result.iterations == 60 and result.skipped_nonfinite == 0


def test_seed_streams_are_disjoint():
    train = {training_seed(s, i) for s in range(3) for i in range(2000)}
    assert len(train) == 6000
    validation, test = set(validation_seeds(500)), set(held_out_seeds(500))
    assert not (train & validation) and not (train & test) and not (validation & test)


class _CrashAt(MetaTrainCallback):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def on_iteration(self, progress) -> None:
        if progress.iteration == self.iteration:
            raise KeyboardInterrupt  # what a killed job looks like to the loop


def test_resuming_from_a_checkpoint_matches_an_uninterrupted_run(tmp_path):
    family = make_family("quadratic", {"dim": 4})
    config = tiny_config(network=QUADRATIC_NET, meta_iterations=10, validation_every=3, checkpoint_every=2)
    uninterrupted = meta_train(family, config)

    with pytest.raises(KeyboardInterrupt):
        meta_train(family, config, checkpoint_dir=tmp_path, callbacks=[_CrashAt(7)])
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["counters"][0] == 6  # the last trajectory boundary before the crash
    resumed = meta_train(family, config, checkpoint_dir=tmp_path)

    assert resumed.iterations == uninterrupted.iterations
    for key, value in uninterrupted.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key
    assert resumed.history == uninterrupted.history


def test_a_checkpoint_of_another_config_is_refused(tmp_path):
    from l2l_plugin.training import CheckpointMismatch

    family = make_family("quadratic", {"dim": 4})
    meta_train(family, tiny_config(network=QUADRATIC_NET, meta_iterations=2), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatch):
        meta_train(family, tiny_config(network=QUADRATIC_NET, meta_iterations=2, seed=5), checkpoint_dir=tmp_path)


def test_injected_non_finite_losses_are_skipped_and_reported():
    family = TwoKindFamily(nan_every=3)
    result = meta_train(family, tiny_config(meta_iterations=30, validation_every=10))
    assert result.skipped_nonfinite > 0
    assert result.iterations == 30
    assert all(bool(torch.isfinite(p).all()) for p in result.net.parameters())
    assert any(h.get("meta_loss") != h.get("meta_loss") for h in result.history if "meta_loss" in h)  # NaN logged


def test_always_non_finite_ends_the_run_with_a_clear_error():
    with pytest.raises(MetaTrainingDiverged, match="non-finite meta-losses"):
        meta_train(TwoKindFamily(nan_every=1), tiny_config(meta_iterations=50, max_consecutive_nonfinite=3))


def test_a_callback_can_cancel_the_run():
    class _Cancel(MetaTrainCallback):
        def should_stop(self) -> bool:
            return True

    with pytest.raises(MetaTrainingCancelled):
        meta_train(make_family("quadratic", {"dim": 3}), tiny_config(network=QUADRATIC_NET), callbacks=[_Cancel()])


def test_per_group_lstms_and_global_averaging_cells_train():
    network = {
        "gac_cells": 2,
        "groups": [{"name": "conv", "pattern": r"^conv\."}],
        "preprocess_p": 10.0,
    }
    config = tiny_config(network=network, meta_iterations=6)
    torch.manual_seed(config.seed)
    from l2l_plugin.optimizer import LSTMOptimizerNet

    untrained = LSTMOptimizerNet(config.network).state_dict()
    result = meta_train(TwoKindFamily(), config)
    trained = result.net.state_dict()
    assert set(result.net.nets) == {"conv", "default"}
    for group in ("conv", "default"):
        key = f"nets.{group}.cells.0.weight_ih"
        assert not torch.equal(untrained[key], trained[key]), f"the {group} LSTM did not train"


def test_time_budget_stops_early_and_still_validates():
    config = tiny_config(network=QUADRATIC_NET, meta_iterations=100_000, max_seconds=1.0)
    result = meta_train(make_family("quadratic", {"dim": 3}), config)
    assert 0 < result.iterations < 100_000
    assert "validation_loss" in result.history[-1]


@pytest.mark.parametrize("metric", ["final_loss_mean", "final_loss_geomean"])
def test_best_weights_are_chosen_by_the_validation_metric(metric):
    from l2l_plugin.evaluation.report import geometric_mean
    from l2l_plugin.optimizer.rollout import run_learned

    family = make_family("quadratic", {"dim": 4})
    config = tiny_config(network=QUADRATIC_NET, meta_iterations=6, validation_every=2, validation_metric=metric)
    result = meta_train(family, config)
    curve, _ = run_learned(result.net, family.sample_stack(validation_seeds(config.validation_tasks)), 10, torch.device("cpu"))
    final = curve[:, -1].double()
    expected = float(final.mean()) if metric == "final_loss_mean" else geometric_mean(final)
    assert result.best_validation_loss == pytest.approx(expected, rel=1e-5)
    scores = [h["validation_loss"] for h in result.history if "validation_loss" in h]
    assert result.best_validation_loss == min(scores)
