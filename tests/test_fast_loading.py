"""``load_optimizer("models:/…")`` on the embedded store: resolved from its SQLite file without
importing MLflow (l2l_registry.local_store), to the same weights MLflow's own route gives, with
MLflow's errors for what does not exist, and without third-party deprecation noise."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_api_support import isolated_mlflow

from l2l_plugin.training.presets import deep_merge
from l2l_registry import OptimizerNotFoundError, load_optimizer, load_trained, meta_train_and_register, promote
from l2l_registry.local_store import FAST_LOAD_ENV, local_optimizer_dir

from helpers import TINY_META

FAMILY = "quadratic"
MODEL = f"l2l-{FAMILY}"
META = deep_merge(TINY_META, {"preset": "paper"})


def _digest(net: torch.nn.Module) -> str:
    state = net.state_dict()
    return hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fast-loading")
    with isolated_mlflow(root / "mlflow"):
        os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
        try:
            _, result = meta_train_and_register(FAMILY, {"dim": 4}, META, root / "run")
            if not result.promoted:
                promote(FAMILY, result.version, "test")
            yield {"root": root, "store": root / "mlflow", "version": result.version, "run_id": result.run_id}
        finally:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)


FRESH = textwrap.dedent(
    """
    import hashlib, json, sys, warnings
    warnings.simplefilter("default")  # every warning shown, as under -W default or pytest
    import torch
    from l2l_registry import load_optimizer
    out = {}
    for uri in sys.argv[1:]:
        optimizer = load_optimizer(uri, [torch.zeros(4, requires_grad=True)])
        state = optimizer.net.state_dict()
        out[uri] = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
    print("RESULT " + json.dumps({"digests": out, "mlflow_imported": "mlflow" in sys.modules}))
    """
)


def _fresh(store: Path, uris: list[str], cwd: Path, **env: str) -> tuple[dict, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "L2L_"))}
    clean.update(L2L_MLFLOW_DIR=str(store), MLFLOW_DISABLE_TELEMETRY="true", **env)
    done = subprocess.run(
        [sys.executable, "-c", FRESH, *uris], env=clean, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[7:]), done.stderr


def test_a_fresh_process_loads_by_alias_and_version_without_importing_mlflow(registered, tmp_path: Path) -> None:
    uris = [f"models:/{MODEL}@champion", f"models:/{MODEL}/{registered['version']}"]
    fast, stderr = _fresh(registered["store"], uris, tmp_path)
    assert fast["mlflow_imported"] is False
    assert "noload" not in stderr
    # MLflow's own route (what load_optimizer did before) gives the same weights.
    slow, stderr = _fresh(registered["store"], uris, tmp_path, **{FAST_LOAD_ENV: "0"})
    assert slow["mlflow_imported"] is True
    assert fast["digests"] == slow["digests"] and len(set(fast["digests"].values())) == 1
    assert "noload" not in stderr  # MLflow's SQL store warns inside our calls; the filter hides it
    assert os.listdir(tmp_path) == []  # nothing written to the working directory


def test_the_fast_path_reads_the_files_mlflow_would_download(registered) -> None:
    from mlflow import MlflowClient

    uri = f"models:/{MODEL}@champion"
    local = local_optimizer_dir(uri)
    assert local is not None and (local / "optimizer.json").is_file()
    client = MlflowClient()
    version = client.get_model_version_by_alias(MODEL, "champion")
    download_uri = client.get_model_version_download_uri(MODEL, version.version)  # what MLflow copies from
    assert str(local).startswith(download_uri.removeprefix("file://"))
    assert _digest(load_trained(local).net) == _digest(load_trained(uri).net)


def test_missing_names_aliases_and_versions_still_get_mlflows_errors(registered) -> None:
    params = [torch.zeros(4, requires_grad=True)]
    assert local_optimizer_dir(f"models:/{MODEL}@staging") is None
    with pytest.raises(OptimizerNotFoundError, match=r"has no alias 'staging'.*No version has been promoted"):
        load_optimizer(f"models:/{MODEL}@staging", params)
    with pytest.raises(OptimizerNotFoundError, match=r"no version '99'"):
        load_optimizer(f"models:/{MODEL}/99", params)
    with pytest.raises(OptimizerNotFoundError, match=r"no registered model 'l2l-nope'"):
        load_optimizer("models:/l2l-nope@champion", params)


def test_a_deleted_version_is_not_served_from_the_store_files(registered) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    existing = client.get_model_version(MODEL, registered["version"])
    copy = client.create_model_version(MODEL, source=existing.source, run_id=existing.run_id)
    uri = f"models:/{MODEL}/{copy.version}"
    assert local_optimizer_dir(uri) is not None
    client.delete_model_version(MODEL, copy.version)
    assert local_optimizer_dir(uri) is None
    with pytest.raises(OptimizerNotFoundError, match=f"no version '{copy.version}'"):
        load_optimizer(uri, [torch.zeros(4, requires_grad=True)])


def test_other_stores_and_uris_take_mlflows_route(registered, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"models:/{MODEL}@champion"
    monkeypatch.setenv(FAST_LOAD_ENV, "0")
    assert local_optimizer_dir(uri) is None
    monkeypatch.delenv(FAST_LOAD_ENV)
    assert local_optimizer_dir(f"runs:/{registered['run_id']}/model") is None
    assert local_optimizer_dir(f"models:/{MODEL}/latest") is None
    assert local_optimizer_dir(f"models:/{MODEL}@champion/optimizer") is None
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-a")
    assert local_optimizer_dir(uri) is None


RAW_MLFLOW = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("default")
    from mlflow import MlflowClient
    MlflowClient(sys.argv[1]).search_registered_models()
    """
)


def test_the_filtered_warning_is_real_noise_from_mlflow(registered, tmp_path: Path) -> None:
    """The control for the "noload not in stderr" checks: MLflow alone does print it."""
    import sqlalchemy

    done = subprocess.run(
        [sys.executable, "-c", RAW_MLFLOW, f"sqlite:///{registered['store'] / 'mlflow.db'}"],
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if "noload" not in done.stderr:
        pytest.skip(f"SQLAlchemy {sqlalchemy.__version__} with this MLflow no longer warns about noload")
    assert "The ``noload`` loader strategy is deprecated" in done.stderr
