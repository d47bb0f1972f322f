"""The service under faults and hostile input (issue 13): each test reproduces one defect found
by probing the service on loopback, and holds the fix.

1. credentials in URIs, errors, logs, tags and /health; /health details only with the token;
2. MLflow calls bounded in time (a server that accepts connections and never answers);
3. crafted optimizer files (catastrophic group patterns, huge manifests, NaN/int weights,
   truncated safetensors, artifact paths out of the model folder);
4. cost caps on the family's own knobs and the evaluation grid;
5./6. disk-full and other worker deaths: recorded with their cause, resumed from the checkpoint;
7. the champion lock;
8. schema conformance (strict booleans, 400/405 documented and correct, per-family schemas).

In process (TestClient) unless a real process is the point; the slow ones (a real worker, a
real `l2l serve`) are at the end.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from test_api_support import TOKEN, api_client, auth, isolated_mlflow, tiny_request  # noqa: E402

from l2l_plugin.artifacts import (  # noqa: E402
    MANIFEST_NAME,
    WEIGHTS_NAME,
    OptimizerFilesError,
    OptimizerManifest,
    Provenance,
    TrainedOptimizer,
    load_trained_optimizer,
    save_trained_optimizer,
)
from l2l_plugin.optimizer.config import OptimizerNetConfig  # noqa: E402
from l2l_plugin.optimizer.network import LSTMOptimizerNet  # noqa: E402

from helpers import assert_champion_lock_excludes_another_process  # noqa: E402

PASSWORD = "s3cret-Passw0rd"


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("hardening-mlflow")
    with isolated_mlflow(directory):
        yield directory


@pytest.fixture
def client(mlflow_dir: Path, tmp_path: Path):
    with api_client(tmp_path / "data", workers=0, token=TOKEN, max_queued=50) as test_client:
        yield test_client


class SilentServer:
    """A TCP port that accepts connections and never answers: a hung MLflow server."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)  # connections complete in the backlog; nobody reads them
        self.port = self.sock.getsockname()[1]
        self.url = f"http://mlflow-user:{PASSWORD}@127.0.0.1:{self.port}"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hung_mlflow(mlflow_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """MLFLOW_TRACKING_URI at a silent server, with credentials in the URI."""
    from test_api_support import reset_mlflow_uris

    server = SilentServer()
    reset_mlflow_uris()  # first: mlflow.set_tracking_uri(None) unsets MLFLOW_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    # Short HTTP timeouts for the background calls this test leaves hanging.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    yield server
    server.close()
    reset_mlflow_uris()


# -- 1. credentials ---------------------------------------------------------------------------------


def test_redact_hides_url_passwords_secret_parameters_and_configured_secrets(monkeypatch) -> None:
    from l2l_registry.redaction import redact

    monkeypatch.setenv("L2L_API_TOKEN", "token-abcdef")
    monkeypatch.setenv("L2L_API_DATABASE_URL", "postgresql://l2l:db-pass-123@db/l2l")
    text = (
        f"HTTPConnectionPool(host='h'): url http://user:{PASSWORD}@mlflow:5000/api?x=1 "
        "postgresql+psycopg://l2l:db-pass-123@db:5432/l2l token=abc123 Bearer token-abcdef"
    )
    cleaned = redact(text)
    for secret in (PASSWORD, "db-pass-123", "abc123", "token-abcdef"):
        assert secret not in cleaned
    assert "http://user:***@mlflow:5000/api" in cleaned and "host='h'" in cleaned
    assert redact("http://mlflow:5000 and sqlite:///data/mlflow.db") == "http://mlflow:5000 and sqlite:///data/mlflow.db"


def test_log_records_are_redacted_even_in_tracebacks(caplog) -> None:
    from l2l_registry.redaction import install_log_redaction

    install_log_redaction()
    log = logging.getLogger("l2l_api.test")
    try:
        raise ConnectionError(f"cannot reach http://u:{PASSWORD}@host/")
    except ConnectionError:
        log.exception("MLflow at %s failed", f"http://u:{PASSWORD}@host")
    assert caplog.records and PASSWORD not in caplog.text
    assert "http://u:***@host" in caplog.text


def test_stored_job_errors_and_gate_reasons_are_redacted(tmp_path: Path) -> None:
    from l2l_api.db import JobStore
    from l2l_registry.gate import decide

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create("a" * 32, "quadratic", {}, {}, True, 6, None)
    job = store.claim(0, os.getpid())
    assert job is not None
    store.finish(job.id, job.attempt, "failed", error=f"ConnectionError: http://u:{PASSWORD}@mlflow:5000")
    stored = store.get(job.id)
    assert stored is not None and PASSWORD not in (stored.error or "") and "u:***@mlflow" in stored.error

    class Report:  # only what decide() reads before the champion error
        beats_every_baseline = True

    decision = decide(Report(), None, champion_error=f"cannot download from https://x:{PASSWORD}@s3/")  # type: ignore[arg-type]
    assert not decision.promote and PASSWORD not in decision.reason


def test_health_details_only_with_the_token_and_no_credentials_anywhere(hung_mlflow, client, caplog) -> None:
    started = time.monotonic()
    anonymous = client.get("/health")
    assert time.monotonic() - started < 8  # the ping is bounded (5 s), the answer still comes
    body = anonymous.json()
    assert anonymous.status_code == 200 and body["status"] == "degraded"
    assert body["problems"] == ["MLflow is unreachable"]
    assert body["mlflow"] is None and body["workers"] is None and body["jobs"] is None and body["disk"] is None
    detailed = client.get("/health", headers=auth()).json()
    assert detailed["mlflow"]["reachable"] is False and detailed["workers"]["configured"] == 0
    assert detailed["disk"]["free_mb"] > 0
    for text in (anonymous.text, json.dumps(detailed), caplog.text):
        assert PASSWORD not in text


# -- 2. bounded MLflow calls --------------------------------------------------------------------------


def test_mlflow_calls_on_request_paths_answer_503_fast_when_mlflow_hangs(mlflow_dir, tmp_path, hung_mlflow) -> None:
    with api_client(tmp_path / "data", workers=0, token=TOKEN, mlflow_request_timeout_seconds=1.5) as client:
        for method, path, body in (
            ("POST", "/meta-train", tiny_request()),
            ("GET", "/optimizers", None),
            ("GET", "/optimizers/quadratic", None),
            ("GET", "/optimizers/quadratic/champion", None),
            ("GET", "/optimizers/quadratic/1/files", None),
        ):
            started = time.monotonic()
            response = client.request(method, path, json=body, headers=auth())
            elapsed = time.monotonic() - started
            assert response.status_code == 503, (path, response.text)
            assert elapsed < 5, (path, elapsed)
            assert response.headers["Retry-After"] and "1.5 s" in response.json()["detail"]
            assert PASSWORD not in response.text
        assert client.get("/jobs", headers=auth()).json()["jobs"] == []  # nothing was queued


def test_the_service_bounds_mlflow_http_retries_for_itself_and_its_workers(tmp_path, monkeypatch) -> None:
    from l2l_api.settings import Settings, prepare_environment

    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("L2L_MLFLOW_DIR", str(tmp_path / "mlflow"))
    prepare_environment(Settings(data_dir=tmp_path, mlflow_http_timeout_seconds=7, mlflow_http_retries=1))
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "1"


# -- 3. crafted optimizer files -------------------------------------------------------------------------


def _optimizer_dir(tmp_path: Path, **network) -> Path:
    config = OptimizerNetConfig(**network)
    manifest = OptimizerManifest(
        network=config, family="quadratic", family_config={}, meta_training={}, provenance=Provenance(library_version="t")
    )
    return save_trained_optimizer(tmp_path / "optimizer", TrainedOptimizer(manifest, LSTMOptimizerNet(config)))


def _rewrite_manifest(directory: Path, change) -> None:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    change(manifest)
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_a_valid_optimizer_still_loads(tmp_path: Path) -> None:
    directory = _optimizer_dir(tmp_path, groups=[{"name": "conv", "pattern": r"^conv\d+\.weight$"}])
    trained = load_trained_optimizer(directory)
    assert trained.manifest.network.groups[0].name == "conv"


def test_a_catastrophic_group_pattern_is_refused_before_any_step(tmp_path: Path) -> None:
    directory = _optimizer_dir(tmp_path, groups=[{"name": "a", "pattern": "^a"}])
    _rewrite_manifest(directory, lambda m: m["network"]["groups"][0].update(pattern=r"^(\w+\.?)*#$"))
    started = time.monotonic()
    with pytest.raises(OptimizerFilesError, match="nests a repetition"):
        load_trained_optimizer(directory)
    assert time.monotonic() - started < 2


def test_a_huge_manifest_is_refused_before_allocating(tmp_path: Path) -> None:
    import resource

    directory = _optimizer_dir(tmp_path)
    groups = [{"name": f"g{i}", "pattern": f"^p{i}"} for i in range(300)]
    _rewrite_manifest(directory, lambda m: m["network"].update(groups=groups, hidden_size=512, num_layers=4))
    with pytest.raises(OptimizerFilesError, match="300 groups"):
        load_trained_optimizer(directory)
    _rewrite_manifest(directory, lambda m: m["network"].update(groups=groups[:16]))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(OptimizerFilesError, match="parameters"):
        load_trained_optimizer(directory)
    # 16 groups × 4 layers × 512 units would be ~540 MB of float32; the check allocated none of it.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kB


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.__setitem__(next(iter(w)), w[next(iter(w))].clone().fill_(float("nan"))), "NaN or infinite"),
        (lambda w: w.__setitem__(next(iter(w)), w[next(iter(w))].to(torch.int8)), "floating point"),
        (lambda w: w.__setitem__(next(iter(w)), torch.zeros(3, 3)), "shape"),
        (lambda w: w.pop(next(iter(w))), "missing"),
    ],
    ids=["nan", "int8", "shape", "missing"],
)
def test_weights_are_validated_against_the_manifest(tmp_path: Path, change, message: str) -> None:
    from safetensors.torch import load_file

    directory = _optimizer_dir(tmp_path)
    weights = load_file(str(directory / WEIGHTS_NAME))
    change(weights)
    save_file(weights, str(directory / WEIGHTS_NAME))
    with pytest.raises(OptimizerFilesError, match=message):
        load_trained_optimizer(directory)


def test_a_truncated_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    directory = _optimizer_dir(tmp_path)
    data = (directory / WEIGHTS_NAME).read_bytes()
    for cut in (len(data) - 10, 20, 4):
        (directory / WEIGHTS_NAME).write_bytes(data[:cut])
        with pytest.raises(OptimizerFilesError, match="truncated"):
            load_trained_optimizer(directory)


def test_an_invalid_manifest_is_a_clear_error(tmp_path: Path) -> None:
    directory = _optimizer_dir(tmp_path)
    (directory / MANIFEST_NAME).write_text('{"format_version": 1, "network": {"hidden_size": -1}}')
    with pytest.raises(OptimizerFilesError, match="not a valid optimizer manifest"):
        load_trained_optimizer(directory)


def test_an_mlmodel_artifact_path_outside_the_model_folder_is_refused(tmp_path: Path) -> None:
    from l2l_registry import RegistryError
    from l2l_registry.loading import load_trained

    elsewhere = _optimizer_dir(tmp_path / "elsewhere")
    model = tmp_path / "downloaded-model"
    model.mkdir()
    relative = os.path.relpath(elsewhere, model)
    (model / "MLmodel").write_text(
        "flavors:\n  python_function:\n    loader_module: mlflow.pyfunc.model\n"
        f"    artifacts:\n      optimizer:\n        path: {relative}\n"
    )
    with pytest.raises(RegistryError, match="outside the model folder"):
        load_trained(model)
    # A symlink inside the folder that leads out is refused too.
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / MANIFEST_NAME).symlink_to(elsewhere / MANIFEST_NAME)
    (linked / WEIGHTS_NAME).symlink_to(elsewhere / WEIGHTS_NAME)
    with pytest.raises(RegistryError, match="outside the model folder"):
        load_trained(linked)


def test_a_request_with_a_catastrophic_group_pattern_is_422(client) -> None:
    meta = {**tiny_request()["meta_overrides"], "network": {"groups": [{"name": "x", "pattern": r"^(\w+\.?)*#$"}]}}
    response = client.post("/meta-train", json=tiny_request(meta_overrides=meta), headers=auth())
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "meta_overrides", "network", "groups", 0, "pattern"]
    assert "nests a repetition" in error["msg"]


# -- 4. cost caps ------------------------------------------------------------------------------------------


def test_every_first_party_family_declares_a_cost_and_its_defaults_fit_the_caps() -> None:
    from l2l_api.limits import cost_errors
    from l2l_api.settings import Settings
    from l2l_plugin.families import discover_families, make_family
    from l2l_plugin.pipeline import resolve_meta_train_config

    for name in ("quadratic", "mnist_mlp", "mnist_conv", "neural_art"):
        family = make_family(name, {})
        cost = family.cost()
        assert cost is not None and cost.coordinates > 0 and cost.memory_floats >= cost.coordinates, name
        assert cost_errors(family, resolve_meta_train_config(family, {}), Settings()) == [], name
    assert "quadratic" in discover_families()


def test_the_caps_count_the_optimizers_own_state_and_work() -> None:
    """An NTM-BFGS memory of 64 slots × 8 write heads is ~4 kB per coordinate: the same family
    config that fits with the LSTM is refused once the optimizer's memory is counted."""
    from l2l_api.limits import cost_errors
    from l2l_api.settings import Settings
    from l2l_plugin.families import make_family
    from l2l_plugin.pipeline import resolve_meta_train_config

    family = make_family("quadratic", {"dim": 64, "num_functions": 64})
    settings = Settings(max_task_memory_mb=512)
    lstm = resolve_meta_train_config(family, {})
    memory = {"kind": "ntm_bfgs", "memory": {"slots": 64, "write_heads": 8}}
    ntm = resolve_meta_train_config(family, {"network": {**lstm.network.model_dump(), **memory}})
    assert cost_errors(family, lstm, settings) == []
    (error,) = cost_errors(family, ntm, settings)
    assert "bytes of optimizer state" in error["msg"]


def test_a_family_config_that_would_allocate_hundreds_of_gb_is_422(client) -> None:
    body = tiny_request(family_config={"dim": 4096, "num_functions": 4096})
    response = client.post("/meta-train", json=body, headers=auth())
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "family_config"] and "MAX_TASK_MEMORY_MB" in error["msg"]
    assert client.get("/jobs", headers=auth()).json()["jobs"] == []


def test_an_evaluation_too_expensive_for_the_service_is_422(mlflow_dir, tmp_path) -> None:
    with api_client(tmp_path / "data", workers=0, token=TOKEN, max_evaluation_work=1e6) as client:
        response = client.post("/meta-train", json=tiny_request(), headers=auth())
        assert response.status_code == 422
        assert "MAX_EVALUATION_WORK" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    ("evaluation", "where"),
    [
        ({"lr_max": float("inf")}, ["body", "meta_overrides", "evaluation", "lr_max"]),
        ({"lr_min": float("nan")}, ["body", "meta_overrides", "evaluation", "lr_min"]),
        ({"lr_min": 1e-150, "lr_max": 1e150}, ["body", "meta_overrides", "evaluation", "lr_min"]),
        ({"lr_min": 1e-8, "lr_max": 1e5, "lr_points_per_decade": 10}, ["body", "meta_overrides", "evaluation", "lr_points_per_decade"]),
    ],
    ids=["infinite", "nan", "absurd-range", "too-many-points"],
)
def test_infinite_or_absurd_grids_are_422(client, evaluation: dict, where: list) -> None:
    meta = tiny_request()["meta_overrides"]
    meta["evaluation"] = {**meta["evaluation"], **evaluation}
    # httpx writes Infinity/NaN as Python's json does; the service must refuse them, not run them.
    content = json.dumps(tiny_request(meta_overrides=meta))
    response = client.post("/meta-train", content=content, headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert where in [error["loc"] for error in response.json()["detail"]]


def test_non_finite_family_fields_are_422(client) -> None:
    content = json.dumps(tiny_request(family_config={"dim": 4, "theta_init_std": float("inf")}))
    response = client.post("/meta-train", content=content, headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 422
    assert ["body", "family_config", "theta_init_std"] in [error["loc"] for error in response.json()["detail"]]


# -- 5. a full disk, seen before it kills a job ----------------------------------------------------------


def test_a_nearly_full_data_directory_refuses_jobs_and_degrades_health(mlflow_dir, tmp_path) -> None:
    with api_client(tmp_path / "data", workers=0, token=TOKEN, min_free_disk_mb=1e12) as client:
        response = client.post("/meta-train", json=tiny_request(), headers=auth())
        assert response.status_code == 503 and "nearly full" in response.json()["detail"]
        assert response.headers["Retry-After"]
        health = client.get("/health").json()
        assert health["status"] == "degraded" and "the data directory is nearly full" in health["problems"]


# -- 7. the champion lock ------------------------------------------------------------------------------------


def test_the_champion_lock_excludes_other_processes(tmp_path: Path) -> None:

    from l2l_api.db import JobStore

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    store = JobStore(url)
    assert_champion_lock_excludes_another_process(store, url)
    # Another model's lock is independent.
    with store.champion_lock("l2l-quadratic"):
        done = threading.Event()

        def take_other() -> None:
            with store.champion_lock("l2l-mnist_mlp"):
                done.set()

        thread = threading.Thread(target=take_other)
        thread.start()
        thread.join(10)
        assert done.is_set()


def test_a_forced_promotion_takes_the_champion_lock(monkeypatch) -> None:
    import importlib

    from l2l_registry import gate

    promote = importlib.import_module("l2l_registry.promote")

    taken: list[str] = []

    def recording(model: str):
        from contextlib import contextmanager

        @contextmanager
        def held():
            taken.append(model)
            yield

        return held()

    gate.set_champion_lock(recording)
    try:
        monkeypatch.setattr(promote, "check_model_uri", lambda *a, **k: None)
        monkeypatch.setattr(promote, "_force", lambda name, *a: taken.append(f"forced {name}"))
        promote.promote("quadratic", 3)
        assert taken == ["l2l-quadratic", "forced l2l-quadratic"]
    finally:
        gate.set_champion_lock(None)


# -- 8. schema conformance ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, "true", "yes", None])
def test_register_must_be_a_real_boolean(client, value) -> None:
    response = client.post("/meta-train", json=tiny_request(register=value), headers=auth())
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "register"]


def test_a_405_names_every_method_of_the_path(client) -> None:
    job_path = f"/jobs/{'0' * 32}"
    response = client.put(job_path, headers=auth())
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "DELETE"}
    response = client.delete("/families", headers=auth())
    assert response.status_code == 405 and response.headers["Allow"] == "GET"


def test_the_openapi_schema_documents_400_and_each_familys_config(client) -> None:
    schema = client.get("/openapi.json").json()
    for path in ("/optimizers", "/optimizers/{family}", "/optimizers/{family}/{ref}", "/optimizers/{family}/{ref}/files"):
        assert "400" in schema["paths"][path]["get"]["responses"], path
    components = schema["components"]["schemas"]
    request = components["MetaTrainRequest"]
    assert request["discriminator"]["propertyName"] == "family"
    assert {"quadratic", "mnist_mlp", "mnist_conv"} <= set(request["discriminator"]["mapping"])
    quadratic = components[request["discriminator"]["mapping"]["quadratic"].rsplit("/", 1)[1]]
    assert quadratic["properties"]["family"]["const"] == "quadratic"
    assert quadratic["properties"]["register"]["type"] == "boolean"
    config = components[quadratic["properties"]["family_config"]["$ref"].rsplit("/", 1)[1]]
    assert config["additionalProperties"] is False and config["properties"]["dim"]["maximum"] == 4096
    mlp = components[request["discriminator"]["mapping"]["mnist_mlp"].rsplit("/", 1)[1]]
    mlp_config = components[mlp["properties"]["family_config"]["$ref"].rsplit("/", 1)[1]]
    assert "data_dir" not in mlp_config["properties"]  # server-only: a request may not set it


# -- slow: real worker processes, a real mlflow server, a real `l2l serve` -------------------------------

import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import urllib.request  # noqa: E402

from test_api_support import TERMINAL, LiveService, free_port, wait_for  # noqa: E402

JOB_SECONDS = 180
LONG = {"meta_iterations": 5000, "checkpoint_every": 5, "validation_every": 1000, "max_seconds": 300}


def _long_request(**changes) -> dict:
    return tiny_request(register=False, meta_overrides={**tiny_request()["meta_overrides"], **LONG}, **changes)


def _job(client, job_id: str) -> dict:
    return client.get(f"/jobs/{job_id}", headers=auth()).json()


def _mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0


def _fill(directory: Path) -> Path:
    """Write zeros until the file system is full."""
    filler = directory / "filler"
    with open(filler, "wb") as handle:
        block = b"\0" * (1 << 20)
        try:
            while True:
                handle.write(block)
                handle.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_kills_the_worker_with_its_cause_and_the_job_resumes(mlflow_dir, tmp_path) -> None:
    """Defect 5: with the data directory full the worker exited, its job stayed running for
    minutes and the cause was lost ("exit code 1"). Now the worker's cause reaches the job, and
    the job resumes from its checkpoint once there is space again. A real full disk: a small
    tmpfs (needs root; skipped elsewhere)."""
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "48m"):
        pytest.skip("needs root and mount to make a small tmpfs")
    try:
        with api_client(small / "data", workers=1, token=TOKEN, min_free_disk_mb=1, max_resumes=10) as client:
            wait_for(lambda: client.get("/health", headers=auth()).json(), lambda h: h["workers"]["alive"] == 1, 90)
            response = client.post("/meta-train", json=_long_request(), headers=auth())
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            wait_for(lambda: _job(client, job_id), lambda j: j["progress"]["iterations_done"] > 12, JOB_SECONDS)
            filler = _fill(small)
            health = wait_for(
                lambda: client.get("/health", headers=auth()).json(),
                lambda h: "the data directory is nearly full" in h["problems"],
                30,
            )
            assert health["status"] == "degraded"
            # POST refuses new work with the real reason (it said "MLflow is unavailable").
            refused = client.post("/meta-train", json=tiny_request(), headers=auth())
            assert refused.status_code == 503 and "nearly full" in refused.json()["detail"]
            # The worker's next checkpoint (every 5 meta-iterations) fails: it dies with the cause.
            wait_for(
                lambda: client.get("/health", headers=auth()).json(),
                lambda h: h["workers"]["alive"] == 0 or _job(client, job_id)["attempt"] > 1,
                60,
            )
            filler.unlink()
            resumed = wait_for(
                lambda: _job(client, job_id),
                lambda j: j["state"] in TERMINAL or (j["attempt"] > 1 and (j["message"] or "").startswith("resumed")),
                JOB_SECONDS,
            )
            assert resumed["state"] == "running", resumed
            assert "from the checkpoint at meta-iteration" in resumed["message"]
            assert "is full" in resumed["message"] and "exit code 1" in resumed["message"], resumed["message"]
            assert client.delete(f"/jobs/{job_id}", headers=auth()).status_code == 202
            assert wait_for(lambda: _job(client, job_id), lambda j: j["state"] in TERMINAL, 60)["state"] == "cancelled"
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


class MlflowServer:
    """A real `mlflow server` on a fixed port, stoppable and restartable on the same store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> MlflowServer:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with open(self.root / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
                    "--port", str(self.port), "--workers", "1",
                    "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
                    "--artifacts-destination", str(self.root / "artifacts"),
                ],
                cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.root / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not start:\n" + (self.root / "server.log").read_text()[-3000:])

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def test_mlflow_killed_mid_job_fails_it_fast_and_its_run_is_closed_later(tmp_path, monkeypatch) -> None:
    """Defect 2: with the mlflow server killed mid-job, GET /optimizers/{family} and POST did not
    answer for minutes, the job failed after ≈3 minutes of retries and its run stayed RUNNING."""
    from test_api_support import reset_mlflow_uris

    server = MlflowServer(tmp_path).start()
    reset_mlflow_uris()  # first: mlflow.set_tracking_uri(None) unsets MLFLOW_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)  # the service's own bounds apply
    try:
        with api_client(tmp_path / "data", workers=1, token=TOKEN) as client:
            wait_for(lambda: client.get("/health", headers=auth()).json(), lambda h: h["workers"]["alive"] == 1, 90)
            job_id = client.post("/meta-train", json=_long_request(), headers=auth()).json()["id"]
            wait_for(lambda: _job(client, job_id), lambda j: j["progress"]["iterations_done"] > 3, JOB_SECONDS)
            server.kill()
            for method, path, body in (("GET", "/optimizers/quadratic", None), ("POST", "/meta-train", tiny_request())):
                started = time.monotonic()
                response = client.request(method, path, json=body, headers=auth())
                assert response.status_code == 503 and response.headers["Retry-After"], response.text
                assert time.monotonic() - started < 10, path
            failed = wait_for(lambda: _job(client, job_id), lambda j: j["state"] in TERMINAL, 90)
            assert failed["state"] == "failed" and failed["error"].startswith("MLflow is unreachable"), failed
            server.start()  # same store, same port: the supervisor closes the run it left open
            run = wait_for(
                lambda: json.loads(
                    urllib.request.urlopen(f"{server.url}/api/2.0/mlflow/runs/get?run_id={failed['mlflow_run_id']}").read()
                )["run"]["info"],
                lambda info: info["status"] != "RUNNING",
                60,
            )
            assert run["status"] == "FAILED"
    finally:
        server.kill()
        reset_mlflow_uris()


def test_the_service_listens_at_once_when_mlflow_is_unreachable_at_start_up(tmp_path) -> None:
    """Defect 2: with MLflow unreachable at start-up, `l2l serve` did not listen for minutes."""
    silent = SilentServer()
    try:
        live = LiveService(
            tmp_path / "data", tmp_path / "server.log", env={"MLFLOW_TRACKING_URI": silent.url}, workers=0
        )
        started = time.monotonic()
        live.start(timeout=60)
        try:
            assert time.monotonic() - started < 30
            status, health = live.request("GET", "/health")
            assert status == 200 and health["status"] == "degraded" and health["mlflow"]["reachable"] is False
            status, anonymous = live.request("GET", "/health", token=None)
            assert anonymous["workers"] is None
            assert PASSWORD not in json.dumps(health) + json.dumps(anonymous)
        finally:
            live.stop()
        assert PASSWORD not in live.log()
    finally:
        silent.close()
