"""The main job (``l2l demo``) and the example pipeline, in fresh processes, on an embedded store
in a temporary data directory and from an unrelated working directory."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow

from l2l_registry import store

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "train_with_champion.py"
L2L = Path(sys.executable).with_name("l2l")
# Seconds-long settings under which the learned optimizer honestly beats SGD and Adam (tuned up
# to lr 0.1) on its held-out instances, so the demo ends with a champion.
TINY_DEMO = {
    "meta_batch_size": 8,
    "horizon": 10,
    "unroll_length": 5,
    "meta_iterations": 40,
    "meta_lr": 0.01,
    "validation_every": 3,
    "validation_tasks": 4,
    "checkpoint_every": 20,
    "evaluation.test_tasks": 6,
    "evaluation.tuning_tasks": 3,
    "evaluation.lr_points_per_decade": 1,
    "evaluation.lr_min": 1e-4,
    "evaluation.lr_max": 0.1,
    "evaluation.baselines": '["sgd","adam"]',
    "evaluation.cost_profile_parameters": 1000,
}


def _run(command: list[str], cwd: Path, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=_env(data_dir), capture_output=True, text=True, timeout=300)


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(L2L_MLFLOW_DIR=str(data_dir), MLFLOW_DISABLE_TELEMETRY="true")
    return env


def _example_without_champion(data_dir: Path, monkeypatch, capsys) -> str:
    """The example's main() in this process (a fresh one costs seconds of imports)."""
    for name in [n for n in os.environ if n.startswith("MLFLOW_") and n != "MLFLOW_DISABLE_TELEMETRY"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(store.DATA_DIR_ENV, str(data_dir))
    spec = importlib.util.spec_from_file_location("train_with_champion", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    try:
        assert example.main(["--steps", "2"]) == 1
    finally:
        mlflow.set_tracking_uri(None)  # leave no process-wide MLflow state to later tests
        store._applied_default = None
    return capsys.readouterr().err


def test_demo_registers_a_champion_and_the_example_pipeline_trains_with_it(tmp_path, monkeypatch, capsys):
    data_dir, workdir = tmp_path / "data", tmp_path / "elsewhere"
    workdir.mkdir()

    # Before the demo: the example explains what to run (this also creates the empty store).
    err = _example_without_champion(data_dir, monkeypatch, capsys)
    assert "no registered model 'l2l-quadratic'" in err and "l2l demo" in err

    demo = [str(L2L), "demo", "--quiet", "--set", "dim=3"]
    for key, value in TINY_DEMO.items():
        demo += ["--meta", f"{key}={value}"]
    done = _run(demo, workdir, data_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "beats every baseline: True" in out  # the evaluation table against tuned baselines
    assert "registered l2l-quadratic version 1" in out
    assert "promoted to l2l-quadratic@champion" in out
    assert 'optimizer = load_optimizer("models:/l2l-quadratic@champion", model.parameters())' in out
    assert len(list((data_dir / "runs").glob("quadratic-*/optimizer/optimizer.json"))) == 1  # working files
    assert os.listdir(workdir) == []  # nothing written where the command was started

    example = [sys.executable, str(EXAMPLE), "--steps", "10"]
    done = _run(example, workdir, data_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "optimizer: models:/l2l-quadratic@champion" in done.stdout
    first, last = map(float, re.search(r"loss: (\S+) -> (\S+) in 10 steps", done.stdout).groups())
    assert last < first
    assert os.listdir(workdir) == []
