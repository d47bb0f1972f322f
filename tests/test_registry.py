"""The MLflow registry (l2l_registry): publish, gate, list, promote, load — against the embedded
SQLite store and against a real ``mlflow server`` started here (both via the ``backend`` fixture)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient

from l2l_plugin import LearnedOptimizer, load_trained_optimizer
from l2l_plugin.cli import main as l2l_main
from l2l_plugin.pipeline import deep_merge, meta_train_and_evaluate
from l2l_registry import (
    FamilyMismatchWarning,
    MetaTrainingRun,
    OptimizerNotFoundError,
    PublishResult,
    champion_version,
    configure,
    list_families,
    list_versions,
    load_optimizer,
    load_trained,
    promote,
)
from l2l_registry import conventions as c
from l2l_registry import store as store_module

from helpers import TINY_META

FAMILY = "quadratic"
FAMILY_CONFIG = {"dim": 3}
# Seconds-long runs. WINNER honestly beats SGD and Adam tuned up to lr 0.1 on these instances;
# WORSE beats a deliberately narrow baseline grid but not WINNER; LOSER beats nothing.
WINNER = deep_merge(
    TINY_META,
    {
        "meta_iterations": 40,
        "meta_lr": 0.01,
        "evaluation": {"lr_min": 1e-4, "lr_max": 0.1, "baselines": ["sgd", "adam"]},
    },
)
WORSE = deep_merge(
    TINY_META,
    {
        "meta_iterations": 12,
        "meta_lr": 0.01,
        # grid_extensions 0: the grid stays narrow (by default it grows past an edge the tuned rate hits).
        "evaluation": {"lr_min": 1e-4, "lr_max": 1e-3, "grid_extensions": 0, "baselines": ["sgd"]},
    },
)
LOSER = deep_merge(TINY_META, {"meta_iterations": 3, "evaluation": {"baselines": ["sgd", "adam"]}})
MODEL = c.model_name(FAMILY)


# -- stores -------------------------------------------------------------------------------------


def _reset_mlflow_uris() -> None:
    mlflow.set_tracking_uri(None)
    store_module._applied_default = None
    from mlflow.tracking._model_registry import utils

    utils._registry_uri = None
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Backend:
    kind: str  # "sqlite" or "server"
    tracking_uri: str
    env: dict[str, str]  # what a fresh process needs to see this store
    data_dir: Path


def _start_server(root: Path) -> tuple[subprocess.Popen, str, Path]:
    port = _free_port()
    log_path = root / "server.log"
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                str(mlflow_cli),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{root / 'server.db'}",
                "--artifacts-destination",
                str(root / "server-artifacts"),
            ],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown stops the server and its worker
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return process, url, log_path
        except OSError:
            time.sleep(0.5)
    _stop(process)
    raise RuntimeError(f"mlflow server did not become healthy in 120 s:\n{log_path.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


@pytest.fixture(scope="module", params=["sqlite", "server"])
def backend(request, tmp_path_factory) -> Iterator[Backend]:
    root = tmp_path_factory.mktemp(f"registry-{request.param}")
    data_dir = root / "l2l-data"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", store_module.DATA_DIR_ENV):
            mp.delenv(name, raising=False)
        _reset_mlflow_uris()
        mp.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        process = None
        try:
            if request.param == "sqlite":
                mp.setenv(store_module.DATA_DIR_ENV, str(data_dir))
                store = configure()
                assert store.embedded and store.tracking_uri == f"sqlite:///{data_dir / 'mlflow.db'}"
                yield Backend(
                    "sqlite", store.tracking_uri, {store_module.DATA_DIR_ENV: str(data_dir)}, data_dir
                )
            else:
                process, url, _ = _start_server(root)
                mp.setenv("MLFLOW_TRACKING_URI", url)
                store = configure()
                assert not store.embedded and store.tracking_uri == url == store.registry_uri
                yield Backend("server", url, {"MLFLOW_TRACKING_URI": url}, data_dir)
        finally:
            if process is not None:
                _stop(process)
            _reset_mlflow_uris()


# -- publishing ---------------------------------------------------------------------------------


@dataclass
class Published:
    first: PublishResult
    second: PublishResult
    first_dir: Path


def _publish(meta: dict, out_dir: Path) -> PublishResult:
    with MetaTrainingRun(FAMILY, FAMILY_CONFIG, meta) as run:
        outcome = meta_train_and_evaluate(FAMILY, FAMILY_CONFIG, meta, out_dir, [run.callback])
        return run.publish(outcome)


@pytest.fixture(scope="module")
def published(backend, tmp_path_factory) -> Published:
    root = tmp_path_factory.mktemp(f"published-{backend.kind}")
    first = _publish(WINNER, root / "first")
    second = _publish(WORSE, root / "second")
    return Published(first, second, root / "first")


def test_first_publish_is_the_champion_with_params_metrics_artifacts_and_tags(backend, published):
    first = published.first
    assert (first.version, first.promoted) == ("1", True)
    assert "no champion yet" in first.reason
    assert champion_version(FAMILY) == "1"

    client = MlflowClient()
    mv = client.get_model_version(MODEL, "1")
    assert mv.run_id == first.run_id
    tags = mv.tags
    assert tags[c.TAG_PROMOTION] == c.PROMOTION_PROMOTED
    assert tags[c.TAG_FAMILY] == FAMILY
    assert tags[c.TAG_FAMILY_CONFIG_HASH] == c.config_hash(first.report.family_config)
    assert tags[c.TAG_LIBRARY_VERSION] == "0.1.0"
    assert tags[c.TAG_GIT_COMMIT]
    assert tags[c.TAG_BEATS_BASELINES] == "true"
    assert json.loads(tags[c.TAG_EVALUATION])["beats_every_baseline"] is True

    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["family"] == FAMILY
    assert run.data.params["family.dim"] == "3"
    assert run.data.params["meta.meta_iterations"] == "40"
    assert run.data.tags[c.TAG_REGISTERED_VERSION] == "1"
    assert len(client.get_metric_history(first.run_id, c.METRIC_META_LOSS)) == 40  # one per iteration
    assert client.get_metric_history(first.run_id, c.METRIC_VALIDATION_LOSS)
    assert client.get_metric_history(first.run_id, c.METRIC_SKIPPED)[-1].value == 0
    learned = first.report.optimizers["learned"]
    assert run.data.metrics["eval.learned.final_loss_mean"] == pytest.approx(learned.final_loss_mean)
    assert run.data.metrics["eval.adam.final_loss_mean"] == pytest.approx(
        first.report.optimizers["adam"].final_loss_mean
    )
    assert run.data.metrics["eval.beats_every_baseline"] == 1.0

    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"evaluation.json", "loss_curves.png", "history.json", "optimizer"} <= artifacts
    assert {a.path for a in client.list_artifacts(first.run_id, "optimizer")} == {
        "optimizer/optimizer.json",
        "optimizer/weights.safetensors",
    }


def test_a_worse_run_is_registered_but_not_promoted_with_the_reason(backend, published):
    second = published.second
    assert (second.version, second.promoted) == ("2", False)
    assert second.report.beats_every_baseline  # it passed rule 1 and failed only against the champion
    assert champion_version(FAMILY) == "1"
    tags = MlflowClient().get_model_version(MODEL, "2").tags
    assert tags[c.TAG_PROMOTION] == c.PROMOTION_REJECTED
    assert "not the champion" in tags[c.TAG_PROMOTION_REASON] and "version 1" in tags[c.TAG_PROMOTION_REASON]
    comparison = json.loads(tags[c.TAG_CHAMPION_COMPARISON])
    assert comparison["champion_version"] == "1"
    # The champion was re-run on the new run's instances; WINNER's own numbers there are known.
    assert comparison["champion_mean"] == pytest.approx(
        published.first.report.optimizers["learned"].final_loss_mean
    )
    assert comparison["challenger_mean"] > comparison["champion_mean"]


def test_a_run_that_loses_to_the_baselines_says_so(backend, published, tmp_path):
    result = _publish(LOSER, tmp_path / "loser")
    assert not result.promoted and not result.report.beats_every_baseline
    tags = MlflowClient().get_model_version(MODEL, result.version).tags
    assert tags[c.TAG_PROMOTION] == c.PROMOTION_REJECTED
    assert tags[c.TAG_PROMOTION_REASON].startswith("does not beat every tuned baseline")
    assert champion_version(FAMILY) == "1"


def test_a_publish_interrupted_before_registration_leaves_no_version(
    backend, published, tmp_path, monkeypatch
):
    before = {v.version for v in list_versions(FAMILY, with_metrics=False)}

    def crash(self, *args, **kwargs):  # after the model is logged, before the version is created
        raise RuntimeError("simulated crash mid-publish")

    monkeypatch.setattr(MetaTrainingRun, "_gate", crash)
    run = MetaTrainingRun(FAMILY, FAMILY_CONFIG, LOSER)
    with pytest.raises(RuntimeError, match="simulated crash"):
        with run:
            outcome = meta_train_and_evaluate(
                FAMILY, FAMILY_CONFIG, LOSER, tmp_path / "crash", [run.callback]
            )
            run.publish(outcome)
    assert {v.version for v in list_versions(FAMILY, with_metrics=False)} == before
    client = MlflowClient()
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert "model" in {
        m.name
        for m in client.search_logged_models(
            experiment_ids=[client.get_run(run.run_id).info.experiment_id],
            filter_string=f"source_run_id = '{run.run_id}'",
        )
    }  # the pyfunc was logged: the crash really was mid-publish


def test_listing_shows_versions_metrics_tags_and_the_champion(backend, published, capsys):
    versions = list_versions(FAMILY)
    assert [v.version for v in versions][:2] == ["1", "2"]
    assert [v.champion for v in versions][:2] == [True, False]
    assert versions[0].metrics["eval.learned.final_loss_mean"] == pytest.approx(
        published.first.report.optimizers["learned"].final_loss_mean
    )
    assert versions[1].promotion == c.PROMOTION_REJECTED and "champion" in versions[1].promotion_reason
    assert any(f.family == FAMILY and f.champion_version == "1" for f in list_families())
    manifest_cost = load_trained_optimizer(published.first_dir / "optimizer").manifest.cost_profile
    assert versions[0].cost_profile == manifest_cost.model_dump(mode="json")  # the l2l.cost_profile tag
    assert manifest_cost.parameters == 1000 and manifest_cost.step_ms > 0

    assert l2l_main(["optimizers", FAMILY]) == 0
    out = capsys.readouterr().out
    assert "STEP COST" in out and versions[0].cost_label() in out and "B/param" in versions[0].cost_label()
    assert "not promoted: beats every tuned baseline but not the champion" in out
    assert "models:/l2l-quadratic@champion" in out
    assert l2l_main(["optimizers", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {
        "family": FAMILY,
        "model_name": MODEL,
        "versions": len(versions),
        "champion_version": "1",
    } in listing


def test_missing_alias_unknown_model_and_unknown_version_are_clear_errors(backend, published, capsys):
    params = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(
        OptimizerNotFoundError, match=r"no registered model 'l2l-nope'.*registered optimizers: l2l-quadratic"
    ):
        load_optimizer("models:/l2l-nope@champion", params)
    with pytest.raises(
        OptimizerNotFoundError, match=r"'l2l-quadratic' has no alias 'staging' \(aliases: champion → 1"
    ):
        load_optimizer("models:/l2l-quadratic@staging", params)
    with pytest.raises(OptimizerNotFoundError, match=r"no version '99'"):
        load_optimizer("models:/l2l-quadratic/99", params)
    with pytest.raises(OptimizerNotFoundError, match="not a directory"):
        load_optimizer(str(published.first_dir / "missing"), params)
    assert l2l_main(["optimizers", "nope"]) == 1
    assert "no optimizer is registered for family 'nope'" in capsys.readouterr().err


def test_forced_promotion_moves_the_alias_and_records_it(backend, published, capsys):
    assert l2l_main(["promote", FAMILY, "2", "--reason", "test override"]) == 0
    assert "is now version 2 (was version 1)" in capsys.readouterr().out
    assert champion_version(FAMILY) == "2"
    tags = MlflowClient().get_model_version(MODEL, "2").tags
    assert tags[c.TAG_PROMOTION] == c.PROMOTION_FORCED
    record = json.loads(tags[c.TAG_FORCED_PROMOTION])
    assert record["previous_champion"] == "1" and record["reason"] == "test override"
    assert promote(FAMILY, "1", "restore") == "2"  # back, for the other tests
    assert champion_version(FAMILY) == "1"
    assert l2l_main(["promote", FAMILY, "42"]) == 1
    assert "no version '42'" in capsys.readouterr().err


def test_an_optimizer_for_another_family_loads_with_a_warning(backend, published):
    model = torch.nn.Linear(3, 1)
    with pytest.warns(FamilyMismatchWarning, match=r"'quadratic'.*'mnist_mlp'"):
        optimizer = load_optimizer(published.first_dir, model.parameters(), family="mnist_mlp")
    assert isinstance(optimizer, LearnedOptimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_optimizer(published.first_dir / "optimizer", model.parameters(), family=FAMILY)


FRESH_PROCESS = textwrap.dedent(
    """
    import hashlib, json, os, sys, warnings
    import torch
    import mlflow
    from l2l_plugin import LearnedOptimizer
    from l2l_registry import load_optimizer

    first_dir, run_id, plain_uri = sys.argv[1:4]

    def digest(optimizer):
        state = optimizer.net.state_dict()
        return hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()

    def train(optimizer, theta):
        target = torch.tensor([1.0, -2.0, 0.5])
        losses = []
        for _ in range(10):
            optimizer.zero_grad()
            loss = (theta - target).square().sum()
            loss.backward()
            optimizer.step(loss=loss)
            losses.append(float(loss))
        return losses

    out = {}
    for label, location in [
        ("alias", "models:/l2l-quadratic@champion"),
        ("version", "models:/l2l-quadratic/1"),
        ("runs", f"runs:/{run_id}/model"),
        ("run_files", f"runs:/{run_id}/optimizer"),
        ("directory", first_dir),
    ]:
        theta = torch.zeros(3, requires_grad=True)
        optimizer = load_optimizer(location, [theta])
        assert isinstance(optimizer, LearnedOptimizer), label
        out[label] = {"digest": digest(optimizer), "family": optimizer.trained.manifest.family,
                      "losses": train(optimizer, theta)}

    downloaded = mlflow.artifacts.download_artifacts("models:/l2l-quadratic/1", dst_path="downloaded")
    out["mlmodel_dir"] = {"digest": digest(load_optimizer(downloaded, [torch.zeros(3, requires_grad=True)]))}

    # Plain MLflow, nothing of ours but the pyfunc's own code; pickle is disallowed.
    assert os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] == "false"
    mlflow.set_tracking_uri(plain_uri)
    model = mlflow.pyfunc.load_model("models:/l2l-quadratic@champion").unwrap_python_model()
    theta = torch.zeros(3, requires_grad=True)
    optimizer = model.optimizer([theta])
    out["pyfunc"] = {"digest": digest(optimizer), "class": type(model).__name__,
                     "losses": train(optimizer, theta)}
    request = {"gradients": [[0.5, -1.0, 2.0], [0.1, 0.2, -0.3]], "losses": [3.0, 2.0]}
    prediction = mlflow.pyfunc.load_model("models:/l2l-quadratic/1").predict([request])
    out["predict_shape"] = [len(prediction), len(prediction[0].updates), len(prediction[0].updates[0])]
    out["cwd_untouched"] = sorted(p for p in os.listdir(".") if p != "downloaded")
    print("RESULT " + json.dumps(out))
    """
)


def test_loading_in_a_fresh_process_by_alias_version_run_and_directory(backend, published, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(FRESH_PROCESS)
    workdir = tmp_path / "elsewhere"  # a cwd unrelated to the store: nothing may depend on it
    workdir.mkdir()
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k != store_module.DATA_DIR_ENV
    }
    env.update(
        backend.env,
        MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false",
    )
    done = subprocess.run(
        [sys.executable, str(script), str(published.first_dir), published.first.run_id, backend.tracking_uri],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    digests = {label: entry["digest"] for label, entry in out.items() if isinstance(entry, dict)}
    assert len(set(digests.values())) == 1, digests  # every route gives the champion's weights
    assert out["alias"]["family"] == FAMILY
    assert out["pyfunc"]["class"] == "LearnedOptimizerModel"
    assert out["pyfunc"]["losses"] == out["alias"]["losses"] == out["directory"]["losses"]
    assert out["alias"]["losses"][-1] < out["alias"]["losses"][0]  # it optimizes
    assert out["predict_shape"] == [1, 2, 3]
    assert out["cwd_untouched"] == []  # no mlruns/ or mlflow.db in the working directory


# -- CLI and the embedded default ------------------------------------------------------------


def test_cli_meta_train_register(backend, published, tmp_path, capsys):
    if backend.kind != "sqlite":
        pytest.skip("the CLI path is the same for both stores; once is enough")
    args = ["meta-train", FAMILY, "--set", "dim=3", "--out", str(tmp_path / "cli"), "--quiet", "--register"]
    for key, value in [
        ("meta_iterations", 3),
        ("horizon", 10),
        ("unroll_length", 5),
        ("meta_batch_size", 8),
        ("validation_every", 3),
        ("validation_tasks", 4),
        ("evaluation.test_tasks", 6),
        ("evaluation.tuning_tasks", 3),
        ("evaluation.lr_points_per_decade", 1),
        ("evaluation.cost_profile_parameters", 1000),
    ]:
        args += ["--meta", f"{key}={value}"]
    assert l2l_main(args) == 0
    out = capsys.readouterr().out
    assert "registered l2l-quadratic version" in out and "not promoted: does not beat" in out
    assert (tmp_path / "cli" / "optimizer" / "optimizer.json").is_file()
    runs = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name(MODEL).experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert runs[0].data.params["meta.meta_iterations"] == "3"


def test_embedded_store_lives_in_the_data_directory(backend, published):
    if backend.kind != "sqlite":
        pytest.skip("embedded store only")
    experiment = MlflowClient().get_experiment_by_name(MODEL)
    assert experiment.artifact_location == (backend.data_dir / "artifacts" / MODEL).as_uri()
    assert (backend.data_dir / "mlflow.db").is_file()
    trained = load_trained(f"models:/{MODEL}@champion")
    assert trained.manifest.family == FAMILY


def test_data_directory_and_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(store_module.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store_module.default_data_dir() == tmp_path / "xdg" / "l2l-plugin" / "mlflow"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert store_module.default_data_dir() == tmp_path / "home" / ".local" / "share" / "l2l-plugin" / "mlflow"
    monkeypatch.setenv(store_module.DATA_DIR_ENV, str(tmp_path / "data"))
    assert store_module.default_data_dir() == tmp_path / "data"

    _reset_mlflow_uris()
    try:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        embedded = store_module.resolve_store()
        assert embedded.embedded and embedded.tracking_uri == f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
        monkeypatch.setenv("MLFLOW_REGISTRY_URI", "http://127.0.0.1:2")
        remote = store_module.resolve_store()
        assert (remote.tracking_uri, remote.registry_uri, remote.embedded) == (
            "http://127.0.0.1:1",
            "http://127.0.0.1:2",
            False,
        )
    finally:
        _reset_mlflow_uris()
