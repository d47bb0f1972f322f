"""What a run says while it goes and when it ends: phases (meta-training, evaluating with
optimizers done / total, publishing) and the stop reason, in the pipeline, the `l2l` CLI and the
MLflow run's tags; and `l2l families show` with the family's meta-training defaults.
(The service's side is in test_api.py and test_api_jobs.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_api_support import isolated_mlflow

from l2l_plugin.cli import main as l2l_main
from l2l_plugin.families import get_family
from l2l_plugin.pipeline import PhaseProgress, meta_train_and_evaluate
from l2l_plugin.training import MetaTrainCallback, MetaTrainingDiverged
from l2l_plugin.training.presets import LIBRARY_DEFAULT_PRESET, deep_merge

from helpers import TINY_META, meta_args

FAMILY = "quadratic"
FAMILY_CONFIG = {"dim": 3}
BASELINES = ["sgd", "adam"]  # 1 + 2 optimizers to evaluate
META = deep_merge(TINY_META, {"preset": "paper", "evaluation": {"baselines": BASELINES}})
BUDGET = deep_merge(META, {"meta_iterations": 1_000_000, "max_seconds": 1.0})


@pytest.fixture
def store(tmp_path: Path):
    with isolated_mlflow(tmp_path / "mlflow"):
        yield tmp_path / "mlflow"


def _latest_run():
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name(f"l2l-{FAMILY}")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]


def test_the_pipeline_reports_each_phase_in_order(tmp_path: Path) -> None:
    seen: list[PhaseProgress] = []
    outcome = meta_train_and_evaluate(FAMILY, FAMILY_CONFIG, META, tmp_path / "run", on_phase=seen.append)
    assert [(p.phase, p.done, p.total) for p in seen] == [
        ("meta-training", None, None),
        ("evaluating", 0, 3),
        ("evaluating", 1, 3),
        ("evaluating", 2, 3),
        ("evaluating", 3, 3),
    ]
    assert seen[2].describe() == "evaluating: 1 of 3 optimizers done"
    assert outcome.stop_reason == "completed" and outcome.iterations_total == META["meta_iterations"]
    manifest = json.loads((outcome.optimizer_dir / "optimizer.json").read_text())
    assert manifest["provenance"]["stop_reason"] == "completed"


def test_a_time_budget_stop_is_in_the_cli_summary_with_the_phases(tmp_path: Path, capsys) -> None:
    args = ["meta-train", FAMILY, "--set", "dim=3", "--out", str(tmp_path / "run"), *meta_args(BUDGET)]
    assert l2l_main(args) == 0
    captured = capsys.readouterr()
    summary = next(line for line in captured.out.splitlines() if line.startswith("stop reason:"))
    done = int(summary.split("(")[1].split(" of ")[0])
    assert 0 < done < 1_000_000
    assert summary.startswith(f"stop reason: time budget ({done} of 1000000 meta-iterations")
    assert "max_seconds=1" in summary
    # The progress bars are labelled with their phase; evaluation counts optimizers.
    assert "meta-training:" in captured.err
    assert "evaluating: 100%" in captured.err and "3/3" in captured.err
    manifest = json.loads((tmp_path / "run" / "optimizer" / "optimizer.json").read_text())
    assert manifest["provenance"]["stop_reason"] == "time budget"
    assert manifest["provenance"]["meta_iterations"] == done
    # `l2l evaluate` shows the evaluation's progress the same way.
    assert l2l_main(["evaluate", str(tmp_path / "run" / "optimizer"), "--eval", 'baselines=["sgd"]']) == 0
    err = capsys.readouterr().err
    assert "evaluating: 100%" in err and "2/2" in err and "meta-training" not in err


def test_a_registered_run_is_tagged_with_its_phase_and_stop_reason(store: Path, tmp_path: Path, capsys) -> None:
    args = ["meta-train", FAMILY, "--set", "dim=3", "--out", str(tmp_path / "run"), "--register", *meta_args(META)]
    assert l2l_main(args) == 0
    captured = capsys.readouterr()
    assert "stop reason: completed (6 of 6 meta-iterations" in captured.out
    assert "registered l2l-quadratic version 1" in captured.out
    assert "publishing …" in captured.err
    run = _latest_run()
    assert run.info.status == "FINISHED"
    assert run.data.tags["l2l.stop_reason"] == "completed"
    assert run.data.tags["l2l.phase"] == "publishing"  # the last phase it entered
    assert run.data.tags["l2l.phase_progress"] == "3/3"  # every optimizer evaluated


class _Stop(MetaTrainCallback):
    def should_stop(self) -> bool:
        return True


class _Diverge(MetaTrainCallback):
    def on_iteration(self, progress) -> None:
        raise MetaTrainingDiverged("simulated: non-finite meta-losses")


@pytest.mark.parametrize(
    ("callback", "error", "status", "reason"),
    [(_Stop(), "MetaTrainingCancelled", "KILLED", "cancelled"), (_Diverge(), "MetaTrainingDiverged", "FAILED", "diverged")],
)
def test_a_run_that_ends_early_is_tagged_with_why(store: Path, tmp_path: Path, callback, error, status, reason) -> None:
    from l2l_registry import MetaTrainingRun

    with pytest.raises(Exception) as raised:
        with MetaTrainingRun(FAMILY, FAMILY_CONFIG, META) as run:
            meta_train_and_evaluate(
                FAMILY, FAMILY_CONFIG, META, tmp_path / "run", [run.callback, callback], run.on_phase
            )
    assert type(raised.value).__name__ == error
    from mlflow import MlflowClient

    recorded = MlflowClient().get_run(run.run_id)
    assert recorded.info.status == status
    assert recorded.data.tags["l2l.stop_reason"] == reason
    assert recorded.data.tags["l2l.phase"] == "meta-training"


@pytest.mark.parametrize("name", [FAMILY, "mnist_mlp"])
def test_families_show_prints_the_meta_training_defaults(name: str, capsys) -> None:
    assert l2l_main(["families", "show", name]) == 0
    shown = json.loads(capsys.readouterr().out)
    defaults = get_family(name).meta_train_defaults
    assert shown["meta_train_defaults"] == json.loads(json.dumps(defaults))
    assert shown["meta_train_preset"] == defaults.get("preset", LIBRARY_DEFAULT_PRESET)
    assert shown["defaults"] and shown["schema"]["properties"]
