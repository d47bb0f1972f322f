"""The one "meta-train, log, publish" path (l2l_registry.publish.meta_train_and_publish), the one
error model (l2l_plugin.errors.L2LError) and the one-rule-one-place helpers the registry uses:
the champion URIs, the "beats" comparison, the geometric mean, clipping and tables."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_api_support import isolated_mlflow

from l2l_plugin import TrainedOptimizer, load_trained_optimizer
from l2l_plugin.cli import main as l2l_main
from l2l_plugin.errors import L2LError, UsageError
from l2l_plugin.evaluation.report import OptimizerResult, beats, geometric_mean
from l2l_plugin.families import get_family
from l2l_plugin.pipeline import meta_train_and_evaluate
from l2l_plugin.text import clip, table
from l2l_plugin.training.presets import deep_merge

from helpers import TINY_META, meta_args

FAMILY = "quadratic"
META = deep_merge(TINY_META, {"meta_iterations": 3, "evaluation": {"baselines": ["sgd"]}})


# -- one error model ---------------------------------------------------------------------------


def _user_facing_errors() -> list[tuple[type[BaseException], tuple[type[BaseException], ...], int]]:
    """(class, the bases it had before L2LError, exit code of a CLI stopping on it)."""
    from l2l_api.registry_adapter import MlflowTimeout
    from l2l_mnist_conv.cifar10 import Cifar10DataError
    from l2l_mnist_data import IdxFormatError
    from l2l_mnist_data.loader import MnistDataError
    from l2l_plugin.artifacts import OptimizerFilesError
    from l2l_plugin.families import FamilyLoadError, UnknownFamilyError
    from l2l_plugin.patterns import UnsafePatternError
    from l2l_plugin.training import CheckpointMismatch, MetaTrainingCancelled, MetaTrainingDiverged
    from l2l_plugin.training.distributed.launch import LaunchError
    from l2l_registry.errors import OptimizerNotFoundError, PublishError, RegistryError
    from l2l_registry.gate import ChampionLockTimeout
    from l2l_registry.search.space import SearchSpaceError

    return [
        (UnknownFamilyError, (LookupError,), 2),
        (FamilyLoadError, (RuntimeError,), 2),
        (LaunchError, (ValueError,), 2),
        (SearchSpaceError, (ValueError,), 2),
        (UnsafePatternError, (ValueError,), 1),
        (OptimizerFilesError, (ValueError,), 1),
        (CheckpointMismatch, (ValueError,), 1),
        (MetaTrainingDiverged, (RuntimeError,), 1),
        (MetaTrainingCancelled, (RuntimeError,), 1),
        (RegistryError, (RuntimeError,), 1),
        (OptimizerNotFoundError, (RegistryError, LookupError), 1),
        (PublishError, (RegistryError,), 1),
        (ChampionLockTimeout, (TimeoutError,), 1),
        (MlflowTimeout, (TimeoutError,), 1),
        (MnistDataError, (RuntimeError,), 1),
        (Cifar10DataError, (RuntimeError,), 1),
        (IdxFormatError, (ValueError,), 1),
    ]


@pytest.mark.parametrize("error, old_bases, exit_code", _user_facing_errors(), ids=lambda v: getattr(v, "__name__", ""))
def test_every_user_facing_error_is_an_l2l_error_and_keeps_its_old_bases(error, old_bases, exit_code) -> None:
    assert issubclass(error, L2LError)
    assert all(issubclass(error, base) for base in old_bases)  # `except ValueError` callers still catch it
    assert error.exit_code == exit_code
    assert issubclass(error, UsageError) == (exit_code == 2)


def _l2l(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l2l_plugin.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_an_l2l_error_from_deep_inside_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    # The missing optimizer.json is found deep in artifacts.load_trained_optimizer.
    (tmp_path / "not-an-optimizer").mkdir()
    done = _l2l("evaluate", str(tmp_path / "not-an-optimizer"), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("l2l: ") and "Traceback" not in done.stderr
    # A UsageError: exit status 2; the message lists what is installed.
    done = _l2l("meta-train", "no-such-family", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and FAMILY in lines[0] and "Traceback" not in done.stderr


# -- one publish path ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    with isolated_mlflow(tmp_path / "mlflow"):
        yield tmp_path / "mlflow"


@pytest.fixture
def family_validations(monkeypatch) -> list[object]:
    """Every validation of a quadratic family config (the real validator, counted)."""
    family_class = get_family(FAMILY)
    original = family_class.model_validate
    calls: list[object] = []

    def counting(cls, obj, *args, **kwargs):
        calls.append(obj)
        return original(obj, *args, **kwargs)

    monkeypatch.setattr(family_class, "model_validate", classmethod(counting))
    return calls


def test_meta_train_register_validates_the_family_config_once(store: Path, tmp_path: Path, family_validations, capsys) -> None:
    args = ["meta-train", FAMILY, "--set", "dim=3", "--out", str(tmp_path / "run"), "--quiet", "--register"]
    assert l2l_main(args + meta_args(META)) == 0
    assert "registered l2l-quadratic version 1" in capsys.readouterr().out
    assert family_validations == [{"dim": 3}]


def test_an_unregistered_run_logs_its_files_and_points_at_them(store: Path, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from l2l_registry import list_families, meta_train_and_publish

    phases: list[str] = []
    run = meta_train_and_publish(
        FAMILY, {"dim": 3}, META, tmp_path / "run", register=False, on_phase=lambda p: phases.append(p.phase)
    )
    assert run.version is None and run.optimizer_uri == f"runs:/{run.run_id}/optimizer"
    assert phases[0] == "meta-training" and phases[-1] == "publishing"
    recorded = MlflowClient().get_run(run.run_id)
    assert recorded.info.status == "FINISHED" and recorded.data.tags["l2l.phase"] == "publishing"
    assert recorded.data.metrics["eval.learned.final_loss_mean"] == pytest.approx(
        run.outcome.report.optimizers["learned"].final_loss_mean
    )
    assert {a.path for a in MlflowClient().list_artifacts(run.run_id, "optimizer")} == {
        "optimizer/optimizer.json",
        "optimizer/weights.safetensors",
    }
    assert list_families() == []  # nothing registered


def test_the_cli_and_demo_modules_do_not_import_each_other() -> None:
    code = (
        "import sys, l2l_registry.demo; assert 'l2l_registry.cli' not in sys.modules, 'demo imports cli'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# -- the gate leaves the caller's net alone ------------------------------------------------------


def _trained(tmp_path: Path) -> tuple[TrainedOptimizer, object]:
    outcome = meta_train_and_evaluate(FAMILY, {"dim": 3}, META, tmp_path / "run")
    return load_trained_optimizer(outcome.optimizer_dir), outcome.report


def test_the_gate_runs_the_champion_without_touching_its_net(tmp_path: Path) -> None:
    from l2l_registry.gate import evaluate_on_report_instances

    trained, report = _trained(tmp_path)
    before = {key: value.clone() for key, value in trained.net.state_dict().items()}
    result = evaluate_on_report_instances(trained, report)
    assert result.final_loss_mean == pytest.approx(report.optimizers["learned"].final_loss_mean)
    after = trained.net.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: a net elsewhere than the CPU")
def test_the_gate_leaves_a_net_on_its_device(tmp_path: Path) -> None:
    from l2l_registry.gate import evaluate_on_report_instances

    trained, report = _trained(tmp_path)
    trained.net.to("cuda")
    result = evaluate_on_report_instances(trained, report)
    assert all(p.device.type == "cuda" for p in trained.net.parameters())
    assert result.final_loss_mean == pytest.approx(report.optimizers["learned"].final_loss_mean, rel=1e-4)


# -- one rule, one place ------------------------------------------------------------------------


def test_version_and_alias_uris_come_from_the_conventions() -> None:
    from l2l_registry.conventions import alias_uri, champion_uri, run_optimizer_uri, version_uri

    assert version_uri(FAMILY, 3) == "models:/l2l-quadratic/3"
    assert alias_uri(FAMILY, "staging") == "models:/l2l-quadratic@staging"
    assert champion_uri(FAMILY) == "models:/l2l-quadratic@champion"
    assert run_optimizer_uri("abc") == "runs:/abc/optimizer"


def test_beats_needs_a_lower_mean_and_a_lower_geometric_mean() -> None:
    assert beats(1.0, 1.0, 2.0, 2.0)
    assert not beats(1.0, 3.0, 2.0, 2.0)  # a lower mean alone: a lucky outlier
    assert not beats(3.0, 1.0, 2.0, 2.0)  # a lower geomean alone: blow-ups ignored
    assert not beats(2.0, 2.0, 2.0, 2.0)  # strictly
    curves = torch.tensor([[1.0, 0.5], [1.0, 0.25]])
    better = OptimizerResult.from_curves(curves * 0.5, None)
    assert better.beats(OptimizerResult.from_curves(curves, None))
    assert not OptimizerResult.from_curves(curves, None).beats(better)


def test_the_geometric_mean_ranks_a_diverged_instance_last() -> None:
    assert geometric_mean(torch.tensor([1.0, 4.0])) == pytest.approx(2.0)
    assert geometric_mean(torch.tensor([1.0, math.nan])) == math.inf
    assert geometric_mean(torch.tensor([1.0, math.inf])) == math.inf
    assert math.isfinite(geometric_mean(torch.tensor([0.0, 1.0])))  # a solved instance is not -inf


def test_validation_scores_the_geometric_mean_by_the_same_rule() -> None:
    from l2l_plugin.training.validation import validation_score

    from helpers import tiny_config

    config = tiny_config(validation_metric="final_loss_geomean")
    curves = torch.tensor([[3.0, 1.0], [3.0, 4.0]])
    assert validation_score(curves, config) == geometric_mean(curves[:, -1]) == pytest.approx(2.0)
    assert validation_score(torch.tensor([[3.0, 1.0], [3.0, math.nan]]), config) == math.inf


def test_clip_and_table() -> None:
    assert clip("abcdef", 6) == "abcdef"
    assert clip("abcdefg", 6) == "abc..." and len(clip("x" * 9000, 5000)) == 5000
    assert table([("NAME", "STATUS"), ("quadratic", "ok"), ("b", "error: long text")]).splitlines() == [
        "NAME       STATUS",
        "quadratic  ok",
        "b          error: long text",
    ]


def test_the_data_directory_follows_xdg_for_the_registry_and_the_service(tmp_path: Path, monkeypatch) -> None:
    from l2l_api.settings import default_data_dir as service_data_dir
    from l2l_registry.store import DATA_DIR_ENV, default_data_dir

    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert service_data_dir() == tmp_path / "xdg" / "l2l-plugin"
    assert default_data_dir() == service_data_dir() / "mlflow"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert service_data_dir() == tmp_path / "home" / ".local" / "share" / "l2l-plugin"
