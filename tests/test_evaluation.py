"""Evaluation against tuned baselines, and the meta-train / evaluate CLI."""

from __future__ import annotations

import json

import pytest
import torch

from l2l_plugin import make_family
from l2l_plugin.cli import main as cli_main
from l2l_plugin.evaluation import LEARNED, evaluate, learning_rate_grid
from l2l_plugin.evaluation.baselines import baseline_factory, run_baseline
from l2l_plugin.optimizer import LSTMOptimizerNet, OptimizerNetConfig
from l2l_plugin.training import EvaluationConfig

from helpers import TINY_META

CPU = torch.device("cpu")
QUADRATIC_META = json.dumps({"preprocess_p": None, "loss_input": True})


def test_batched_baselines_equal_separate_torch_optim_runs():
    family = make_family("quadratic", {"dim": 4})
    seeds, lrs = [7, 8, 9], [0.01, 0.1]
    curves, _ = run_baseline(baseline_factory("adam"), family.sample_stack(seeds), lrs, 5, CPU)
    for g, lr in enumerate(lrs):
        for k, seed in enumerate(seeds):
            task = family.sample(seed)
            theta = task.init_params()["theta"].requires_grad_(True)
            optimizer = torch.optim.Adam([theta], lr=lr)
            expected = []
            for step in range(5):
                loss = task.loss({"theta": theta}, step)
                expected.append(loss.item())
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            expected.append(task.loss({"theta": theta}, 5).item())
            assert curves[g, k].tolist() == pytest.approx(expected, rel=1e-5)


def test_learning_rate_grid_is_log_spaced_and_inclusive():
    grid = learning_rate_grid(EvaluationConfig(lr_min=1e-3, lr_max=1.0, lr_points_per_decade=2))
    assert len(grid) == 7
    assert grid[0] == pytest.approx(1e-3) and grid[-1] == pytest.approx(1.0)
    assert grid[1] / grid[0] == pytest.approx(10**0.5)


def test_evaluation_runs_every_optimizer_on_identical_instances():
    family = make_family("quadratic", {"dim": 4})
    config = EvaluationConfig(test_tasks=5, tuning_tasks=2, lr_min=1e-3, lr_max=1.0, lr_points_per_decade=1)
    net = LSTMOptimizerNet(OptimizerNetConfig(preprocess_p=None))
    report = evaluate(net, family, "quadratic", config, steps=6)

    assert set(report.optimizers) == {LEARNED, "sgd", "nag", "rmsprop", "adam"}
    starts = {name: result.curve[0] for name, result in report.optimizers.items()}
    assert len(set(starts.values())) == 1, starts  # same instances, same initial loss
    for name, result in report.optimizers.items():
        assert len(result.final_losses) == 5 and len(result.curve) == 7
        assert (result.lr is None) == (name == LEARNED)
        if result.lr is not None:
            assert result.lr in result.lr_grid
    assert report.best_baseline in {"sgd", "nag", "rmsprop", "adam"}
    assert 0.0 <= report.win_rate_vs_best_baseline <= 1.0
    assert set(report.test_seeds).isdisjoint(report.tuning_seeds)


def test_tuned_adam_beats_a_bad_fixed_rate():
    family = make_family("quadratic", {"dim": 4})
    config = EvaluationConfig(test_tasks=8, tuning_tasks=4, lr_min=1e-4, lr_max=1.0, baselines=("adam",))
    report = evaluate(LSTMOptimizerNet(OptimizerNetConfig()), family, "quadratic", config, steps=30)
    adam = report.optimizers["adam"]
    untuned, _ = run_baseline(baseline_factory("adam"), family.sample_stack(report.test_seeds), [1e-4], 30, CPU)
    assert adam.final_loss_mean < float(untuned[0, :, -1].mean())


def test_cli_meta_train_then_evaluate_on_another_config(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["meta-train", "quadratic", "--set", "dim=4", "--out", str(out), "--quiet",
            "--meta", f"network={QUADRATIC_META}"]
    for key, value in TINY_META.items():
        args += ["--meta", f"{key}={json.dumps(value)}"]
    assert cli_main(args) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    for name in ("learned", "adam", "rmsprop", "sgd", "nag"):
        for key in ("final_loss_mean", "final_loss_median", "final_loss_geomean", "loss_sum_mean", "curve"):
            assert key in evaluation["optimizers"][name]
        assert (evaluation["optimizers"][name]["lr"] is None) == (name == "learned")
    assert {"win_rate_vs_best_baseline", "best_baseline"} <= set(evaluation)
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "optimizer" / "optimizer.json").read_text())
    assert manifest["family"] == "quadratic" and manifest["family_config"]["dim"] == 4
    assert manifest["provenance"]["library_version"] and manifest["evaluation_summary"]["best_baseline"]

    capsys.readouterr()
    assert cli_main(["evaluate", str(out / "optimizer"), "--set", "dim=7", "--steps", "12",
                     "--out", str(tmp_path / "generalisation")]) == 0
    report = json.loads((tmp_path / "generalisation" / "evaluation.json").read_text())
    assert report["family_config"]["dim"] == 7 and report["steps"] == 12
    assert "win rate" in capsys.readouterr().out


def test_cli_bad_input_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["meta-train", "nope", "--out", str(tmp_path)]) == 2
    assert "available families" in capsys.readouterr().err
    assert cli_main(["meta-train", "quadratic", "--set", "dim=-1", "--out", str(tmp_path)]) == 2
    assert "dim" in capsys.readouterr().err
    assert cli_main(["meta-train", "quadratic", "--meta", "horizon=7", "--out", str(tmp_path)]) == 2
    assert "multiple of unroll_length" in capsys.readouterr().err
    assert cli_main(["evaluate", str(tmp_path)]) == 1
    assert "optimizer.json is missing" in capsys.readouterr().err


def test_a_tuned_rate_on_the_grid_edge_extends_the_grid():
    from l2l_plugin.evaluation import tune_learning_rate

    family = make_family("quadratic", {"dim": 3})
    narrow = EvaluationConfig(lr_min=1e-5, lr_max=1e-4, lr_points_per_decade=1, tuning_tasks=4, grid_extensions=0)
    stuck = tune_learning_rate("sgd", family, narrow, 20, torch.device("cpu"))
    assert stuck.lr == pytest.approx(1e-4) and stuck.at_grid_edge and len(stuck.grid) == 2

    extended = tune_learning_rate("sgd", family, narrow.model_copy(update={"grid_extensions": 6}), 20, torch.device("cpu"))
    assert extended.lr > 1e-3 and not extended.at_grid_edge
    assert extended.grid[0] == pytest.approx(1e-5) and extended.grid[-1] > extended.lr  # grew upward only
    assert all(b / a == pytest.approx(10.0) for a, b in zip(extended.grid, extended.grid[1:]))

    too_few = tune_learning_rate("sgd", family, narrow.model_copy(update={"grid_extensions": 1}), 20, torch.device("cpu"))
    assert too_few.lr == pytest.approx(1e-3) and too_few.at_grid_edge  # reported, not hidden
