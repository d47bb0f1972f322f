"""The service's endpoints and error paths, in process (TestClient), without worker processes:
jobs are queued and stored but not run (test_api_jobs.py runs them)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from test_api_support import TOKEN, api_client, auth, isolated_mlflow, tiny_request  # noqa: E402

from l2l_plugin.families import FamilyEntry, FamilyLoadError  # noqa: E402


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("api-mlflow")
    with isolated_mlflow(directory):
        yield directory


@pytest.fixture
def client(mlflow_dir: Path, tmp_path: Path):
    with api_client(tmp_path / "data", workers=0, token=TOKEN, max_queued=3) as test_client:
        yield test_client


@pytest.fixture
def open_client(mlflow_dir: Path, tmp_path: Path):
    """No token configured: mutating endpoints are open."""
    with api_client(tmp_path / "data", workers=0) as test_client:
        yield test_client


# -- health and docs ----------------------------------------------------------------------------


def test_health_reports_mlflow_workers_and_queue(client) -> None:
    response = client.get("/health", headers=auth())
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["mlflow"]["reachable"] is True and "embedded" in body["mlflow"]["store"]
    assert body["workers"] == {"configured": 0, "alive": 0, "processes": []}
    assert body["jobs"] == {"queued": 0, "running": 0, "limit": 3}


def test_health_is_degraded_but_alive_when_mlflow_is_down(client, monkeypatch) -> None:
    from l2l_api import registry_adapter

    def unreachable() -> str:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(registry_adapter, "ping", unreachable)
    body = client.get("/health", headers=auth()).json()
    assert body["status"] == "degraded"
    assert body["mlflow"] == {
        "reachable": False,
        "store": None,
        "error": "ConnectionError: connection refused",
    }


def test_openapi_and_docs(client) -> None:
    schema = client.get("/openapi.json").json()
    for path in (
        "/health",
        "/families",
        "/families/{name}",
        "/meta-train",
        "/jobs",
        "/jobs/{job_id}",
        "/optimizers/{family}",
        "/optimizers/{family}/{ref}",
        "/optimizers/{family}/{ref}/files",
    ):
        assert path in schema["paths"], path
    assert "delete" in schema["paths"]["/jobs/{job_id}"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert client.get("/docs").status_code == 200


# -- families -----------------------------------------------------------------------------------


def test_families_list_schema_and_defaults(client) -> None:
    families = {entry["name"]: entry for entry in client.get("/families").json()}
    quadratic = families["quadratic"]
    assert quadratic["error"] is None
    assert quadratic["schema"]["properties"]["dim"]["maximum"] == 4096
    assert quadratic["defaults"]["dim"] == 10
    assert quadratic["meta_train_defaults"]["meta_batch_size"] == 32
    assert quadratic["distribution"].startswith("l2l-quadratic")

    one = client.get("/families/quadratic").json()
    assert one == quadratic


def test_unknown_family_is_404_naming_the_available_ones(client) -> None:
    response = client.get("/families/nope")
    assert response.status_code == 404
    assert "quadratic" in response.json()["available"]
    assert "available families: " in response.json()["detail"]


def test_a_broken_plugin_is_listed_with_its_error(client, monkeypatch) -> None:
    from l2l_api.routes import families as families_route

    real = dict(families_route.discover_families())
    broken = FamilyEntry(
        "broken", "broken_plugin:Family", "broken-plugin 0.1", None, "failed to load: ImportError: x"
    )
    monkeypatch.setattr(families_route, "discover_families", lambda: {**real, "broken": broken})
    listed = {entry["name"]: entry for entry in client.get("/families").json()}
    assert listed["broken"]["error"] == "failed to load: ImportError: x"
    assert listed["broken"]["schema"] is None and listed["broken"]["defaults"] is None
    assert listed["quadratic"]["error"] is None
    assert client.get("/families/broken").json()["error"].startswith("failed to load")


# -- POST /meta-train -----------------------------------------------------------------------------


def test_meta_train_queues_a_job_with_its_mlflow_run(client) -> None:
    response = client.post("/meta-train", json=tiny_request(), headers=auth())
    assert response.status_code == 202, response.text
    job = response.json()
    assert response.headers["location"] == f"/jobs/{job['id']}"
    assert job["state"] == "queued" and job["attempt"] == 0 and job["register"] is True
    assert job["family_config"] == {
        "dim": 4,
        "num_functions": 1,
        "distribution": "gaussian",
        "theta_init_std": 0.01,
    }
    assert job["progress"]["iterations_total"] == 6 and job["progress"]["iterations_done"] == 0
    assert job["meta_overrides"] == tiny_request()["meta_overrides"]  # quadratic brings its own max_seconds

    from mlflow import MlflowClient

    run = MlflowClient().get_run(job["mlflow_run_id"])
    assert run.info.status == "SCHEDULED"
    assert run.data.tags["l2l.api_job_id"] == job["id"]

    assert client.get(f"/jobs/{job['id']}").json() == job
    listing = client.get("/jobs").json()
    assert [entry["id"] for entry in listing["jobs"]] == [job["id"]]
    assert client.get("/jobs", params={"state": "running"}).json()["jobs"] == []
    assert client.get("/health", headers=auth()).json()["jobs"]["queued"] == 1


def test_family_config_errors_are_422_with_field_locations(client) -> None:
    body = tiny_request(family_config={"dim": 0, "distribution": "cauchy", "extra": 1})
    response = client.post("/meta-train", json=body, headers=auth())
    assert response.status_code == 422
    locations = {tuple(error["loc"]) for error in response.json()["detail"]}
    assert {
        ("body", "family_config", "dim"),
        ("body", "family_config", "distribution"),
        ("body", "family_config", "extra"),
    } <= locations


def test_server_paths_in_a_family_config_are_refused(client) -> None:
    body = tiny_request(family="mnist_mlp", family_config={"data_dir": "/etc"})
    response = client.post("/meta-train", json=body, headers=auth())
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "family_config", "data_dir"] and error["type"] == "server_only"


def test_server_paths_and_invalid_values_in_a_family_distribution_are_refused(client) -> None:
    from helpers import TINY_META

    smuggled = {**TINY_META, "family_distribution": {"data_dir": {"choices": ["/etc"]}}}
    body = tiny_request(family="mnist_mlp", family_config={}, meta_overrides=smuggled)
    response = client.post("/meta-train", json=body, headers=auth())
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"][-2:] == ["family_distribution", "data_dir"] and error["type"] == "server_only"

    invalid = {**TINY_META, "family_distribution": {"dim": {"choices": [3, 0]}}}
    response = client.post("/meta-train", json=tiny_request(meta_overrides=invalid), headers=auth())
    assert response.status_code == 422
    assert "dim: 0 is not valid" in response.json()["detail"][0]["msg"]

    too_long = {**TINY_META, "horizon_curriculum": [10, 10**5], "unroll_length": 5}
    response = client.post("/meta-train", json=tiny_request(meta_overrides=too_long), headers=auth())
    assert response.status_code == 422
    assert any(error["loc"][-1] == "horizon_curriculum" for error in response.json()["detail"])


def test_meta_override_errors_are_422_together_with_family_errors(client) -> None:
    body = tiny_request(family_config={"dim": -1}, meta_overrides={"horizon": 7, "unroll_length": 5})
    detail = client.post("/meta-train", json=body, headers=auth()).json()["detail"]
    locations = [tuple(error["loc"]) for error in detail]
    assert ("body", "family_config", "dim") in locations
    assert ("body", "meta_overrides") in locations  # a cross-field rule of MetaTrainConfig
    assert any("multiple of unroll_length" in error["msg"] for error in detail)

    body = tiny_request(meta_overrides={"nope": 1, "network": {"hidden_size": 0}})
    detail = client.post("/meta-train", json=body, headers=auth()).json()["detail"]
    assert {("body", "meta_overrides", "nope"), ("body", "meta_overrides", "network", "hidden_size")} == {
        tuple(error["loc"]) for error in detail
    }


def test_requests_over_the_service_limits_are_422(client) -> None:
    body = tiny_request(
        meta_overrides={"meta_iterations": 10**6, "max_seconds": 10**5, "evaluation": {"test_tasks": 5000}}
    )
    response = client.post("/meta-train", json=body, headers=auth())
    assert response.status_code == 422
    by_location = {tuple(error["loc"]): error for error in response.json()["detail"]}
    assert by_location[("body", "meta_overrides", "meta_iterations")]["type"] == "limit_exceeded"
    assert "L2L_API_MAX_META_ITERATIONS" in by_location[("body", "meta_overrides", "meta_iterations")]["msg"]
    assert ("body", "meta_overrides", "max_seconds") in by_location
    assert ("body", "meta_overrides", "evaluation", "test_tasks") in by_location


def test_a_gpu_request_on_a_machine_without_one_is_422(client) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    response = client.post(
        "/meta-train",
        json=tiny_request(meta_overrides={**tiny_request()["meta_overrides"], "device": "cuda"}),
        headers=auth(),
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "meta_overrides", "device"]


def test_the_service_budget_applies_when_no_time_limit_is_set() -> None:
    from l2l_api.limits import effective_overrides
    from l2l_api.settings import Settings
    from l2l_plugin.training import MetaTrainConfig

    settings = Settings(max_train_seconds=120)
    assert effective_overrides({"horizon": 10}, MetaTrainConfig(), settings) == {
        "horizon": 10,
        "max_seconds": 120,
    }
    limited = MetaTrainConfig(max_seconds=60)
    assert effective_overrides({"max_seconds": 60}, limited, settings) == {"max_seconds": 60}


def test_unknown_family_on_post_is_404_and_nothing_is_imported(client) -> None:
    response = client.post("/meta-train", json=tiny_request(family="nope"), headers=auth())
    assert response.status_code == 404
    assert "quadratic" in response.json()["available"]
    # A module path is not a family name: it is neither imported nor even accepted as a name.
    for name in ("os:system", "l2l_plugin.families.base:TaskFamily", "../etc/passwd"):
        assert client.post("/meta-train", json=tiny_request(family=name), headers=auth()).status_code == 422
    assert (
        client.post("/meta-train", json=tiny_request(family="subprocess"), headers=auth()).status_code == 404
    )


def test_a_broken_family_on_post_is_409(client, monkeypatch) -> None:
    from l2l_api import job_requests

    def broken(name: str):
        raise FamilyLoadError(f"task family {name!r} is installed but broken: ImportError: x")

    monkeypatch.setattr(job_requests, "get_family", broken)
    response = client.post("/meta-train", json=tiny_request(), headers=auth())
    assert response.status_code == 409
    assert "installed but broken" in response.json()["detail"]


def test_malformed_and_unexpected_bodies_are_422(client) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    assert client.post("/meta-train", content=b"{not json", headers=headers).status_code == 422
    assert client.post("/meta-train", json={"family_config": {}}, headers=auth()).status_code == 422
    assert client.post("/meta-train", json=tiny_request(surprise=True), headers=auth()).status_code == 422
    assert client.post("/meta-train", json=tiny_request(family_config=[1]), headers=auth()).status_code == 422


def test_bodies_over_the_size_limit_are_413(client) -> None:
    body = tiny_request(family_config={"dim": 4, "padding": "x" * 70_000})
    assert client.post("/meta-train", json=body, headers=auth()).status_code == 413

    def chunks():  # no Content-Length: the limit applies while the body streams in
        for _ in range(80):
            yield b" " * 1024

    response = client.post(
        "/meta-train", content=chunks(), headers={**auth(), "Content-Type": "application/json"}
    )
    assert response.status_code == 413


def test_a_full_queue_answers_429(client) -> None:
    for _ in range(3):
        assert client.post("/meta-train", json=tiny_request(), headers=auth()).status_code == 202
    response = client.post("/meta-train", json=tiny_request(), headers=auth())
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert "queue is full" in response.json()["detail"]
    # Cancelling a queued job frees its place.
    first = client.get("/jobs").json()["jobs"][0]["id"]
    assert client.delete(f"/jobs/{first}", headers=auth()).status_code == 200
    assert client.post("/meta-train", json=tiny_request(), headers=auth()).status_code == 202


def test_mlflow_down_on_post_is_503_and_nothing_is_queued(client, monkeypatch) -> None:
    from l2l_api import registry_adapter

    def unreachable(*args, **kwargs):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(registry_adapter, "create_queued_run", unreachable)
    response = client.post("/meta-train", json=tiny_request(), headers=auth())
    assert response.status_code == 503
    assert client.get("/jobs").json()["jobs"] == []


def test_once_mlflow_has_answered_post_leaves_the_run_to_the_worker(client) -> None:
    from mlflow import MlflowClient

    from l2l_api.run_creation import ensure_run

    first = client.post("/meta-train", json=tiny_request(), headers=auth()).json()
    assert first["mlflow_run_id"]  # MLflow's state unknown: the request created the run itself
    response = client.post("/meta-train", json=tiny_request(), headers=auth())
    assert response.status_code == 202 and response.json()["state"] == "queued"
    assert response.json()["mlflow_run_id"] is None  # answered once the row was committed
    store = client.app.state.store
    assert store.claim(0, 1).id == first["id"]
    claimed = store.claim(0, 1)  # what a worker does first with a job its request left it
    job = ensure_run(store, claimed)
    assert job.id == response.json()["id"] and job.mlflow_run_id and job.attempt == 1
    assert client.get(f"/jobs/{job.id}").json()["mlflow_run_id"] == job.mlflow_run_id
    run = MlflowClient().get_run(job.mlflow_run_id)
    assert run.info.status == "SCHEDULED" and run.data.tags["l2l.api_job_id"] == job.id
    assert ensure_run(store, job) is job  # a resumed job keeps its run


def test_after_an_mlflow_failure_post_creates_the_run_itself_and_answers_503(client, monkeypatch) -> None:
    from l2l_api import registry_adapter

    assert client.post("/meta-train", json=tiny_request(), headers=auth()).json()["mlflow_run_id"]
    assert client.post("/meta-train", json=tiny_request(), headers=auth()).json()["mlflow_run_id"] is None

    def unreachable(*args, **kwargs):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(registry_adapter, "ping", unreachable)
    assert client.get("/health").json()["status"] == "degraded"  # seen by the API process
    monkeypatch.setattr(registry_adapter, "create_queued_run", unreachable)
    refused = client.post("/meta-train", json=tiny_request(), headers=auth())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "30"
    assert "MLflow is unavailable, the job was not queued" in refused.json()["detail"]
    assert len(client.get("/jobs").json()["jobs"]) == 2


def test_a_worker_that_cannot_create_its_jobs_run_raises_and_the_store_keeps_one_run(tmp_path, monkeypatch) -> None:
    from l2l_api import registry_adapter
    from l2l_api.db import JobState, JobStore
    from l2l_api.run_creation import ensure_run

    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    store.create("c" * 32, "quadratic", {}, {}, True, 6, None)
    claimed = store.claim(0, 1)
    assert claimed is not None and claimed.mlflow_run_id is None

    def unreachable(*args, **kwargs):
        raise ConnectionError("connection refused")

    monkeypatch.setattr(registry_adapter, "create_queued_run", unreachable)
    with pytest.raises(ConnectionError):
        ensure_run(store, claimed)  # run_job fails the job with it ("MLflow is unreachable (...)")
    attached = store.attach_run("c" * 32, "run-c")
    assert attached is not None and attached.mlflow_run_id == "run-c" and attached.state == JobState.RUNNING
    assert store.attach_run("c" * 32, "run-other") is None  # a job keeps its first run
    assert store.get("c" * 32).mlflow_run_id == "run-c"


# -- authentication -----------------------------------------------------------------------------


def test_mutating_endpoints_need_the_token(client) -> None:
    response = client.post("/meta-train", json=tiny_request())
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.post("/meta-train", json=tiny_request(), headers=auth("wrong")).status_code == 401
    assert (
        client.post("/meta-train", json=tiny_request(), headers={"Authorization": TOKEN}).status_code == 401
    )

    job = client.post("/meta-train", json=tiny_request(), headers=auth()).json()
    assert client.delete(f"/jobs/{job['id']}").status_code == 401
    assert client.delete(f"/jobs/{job['id']}", headers=auth("wrong")).status_code == 401
    assert client.get(f"/jobs/{job['id']}").json()["state"] == "queued"  # reads need no token
    assert client.delete(f"/jobs/{job['id']}", headers=auth()).status_code == 200


def test_without_a_configured_token_the_service_is_open(open_client) -> None:
    assert open_client.post("/meta-train", json=tiny_request()).status_code == 202


# -- jobs -----------------------------------------------------------------------------------------


def test_job_lookups_and_cancelling_a_queued_job(client) -> None:
    assert client.get("/jobs/" + "0" * 32).status_code == 404
    assert client.get("/jobs/not-an-id").status_code == 422
    assert client.delete("/jobs/" + "0" * 32, headers=auth()).status_code == 404
    assert client.get("/jobs", params={"state": "exploded"}).status_code == 422
    assert client.get("/jobs", params={"limit": 0}).status_code == 422

    job = client.post("/meta-train", json=tiny_request(register=False), headers=auth()).json()
    response = client.delete(f"/jobs/{job['id']}", headers=auth())
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["state"] == "cancelled" and cancelled["cancel_requested"] is True
    assert cancelled["finished_at"] is not None and cancelled["stop_reason"] == "cancelled"
    assert cancelled["progress"]["phase"] is None  # it never started
    assert client.delete(f"/jobs/{job['id']}", headers=auth()).status_code == 200  # idempotent

    from mlflow import MlflowClient

    run = MlflowClient().get_run(job["mlflow_run_id"])
    assert run.info.status == "KILLED" and run.data.tags["l2l.stop_reason"] == "cancelled"
    assert [j["id"] for j in client.get("/jobs", params={"state": "cancelled"}).json()["jobs"]] == [job["id"]]
    assert client.get("/jobs", params={"family": "quadratic", "limit": 1}).json()["limit"] == 1


def test_finished_jobs_cannot_be_cancelled(client) -> None:
    job = client.post("/meta-train", json=tiny_request(), headers=auth()).json()
    store = client.app.state.store
    claimed = store.claim(0, 1)
    assert claimed is not None and claimed.id == job["id"] and claimed.attempt == 1
    assert store.finish(job["id"], 1, "failed", error="RuntimeError: boom")
    response = client.delete(f"/jobs/{job['id']}", headers=auth())
    assert response.status_code == 409
    assert "already failed" in response.json()["detail"]
    assert client.get(f"/jobs/{job['id']}").json()["error"] == "RuntimeError: boom"


def test_cancelling_a_running_job_is_a_request_to_its_worker(client) -> None:
    job = client.post("/meta-train", json=tiny_request(), headers=auth()).json()
    store = client.app.state.store
    store.claim(0, 1)
    response = client.delete(f"/jobs/{job['id']}", headers=auth())
    assert response.status_code == 202
    assert response.json()["state"] == "running" and response.json()["cancel_requested"] is True
    assert store.report_progress(job["id"], 1, iterations_done=3) == (True, True)  # what the worker sees
    assert store.report_progress(job["id"], 2, iterations_done=3) == (False, False)  # a stale attempt


def _claimed_reporter(client):
    from l2l_api.job_progress import JobProgressReporter

    job = client.post("/meta-train", json=tiny_request(), headers=auth()).json()
    store = client.app.state.store
    claimed = store.claim(0, os.getpid())
    assert claimed is not None and claimed.id == job["id"]
    return job, store, JobProgressReporter(store, claimed, os.getppid())  # its parent: this process's


def test_a_workers_phases_and_stop_reason_reach_get_jobs(client) -> None:
    from l2l_api.db import JobResult, JobState
    from l2l_plugin.pipeline import PhaseProgress

    job, store, reporter = _claimed_reporter(client)

    def progress() -> dict:
        return client.get(f"/jobs/{job['id']}").json()

    reporter.on_phase(PhaseProgress("meta-training"))
    store.report_progress(job["id"], 1, iterations_done=4, iterations_total=6)
    assert {"phase": "meta-training", "phase_done": 4, "phase_total": 6}.items() <= progress()["progress"].items()
    reporter.on_phase(PhaseProgress("evaluating", 2, 5))
    current = progress()
    assert {"phase": "evaluating", "phase_done": 2, "phase_total": 5, "iterations_done": 4}.items() <= (
        current["progress"].items()
    )
    assert current["message"] == "evaluating: 2 of 5 optimizers done" and current["stop_reason"] is None
    reporter.on_phase(PhaseProgress("publishing"))
    current = progress()
    assert (current["progress"]["phase"], current["progress"]["phase_done"]) == ("publishing", None)
    assert current["message"] == "publishing"
    result = JobResult(optimizer_uri="models:/l2l-quadratic/1", model_name="l2l-quadratic", model_version="1")
    assert store.finish(job["id"], 1, JobState.SUCCEEDED, message="done", result=result, stop_reason="time budget")
    done = progress()
    assert done["state"] == "succeeded" and done["stop_reason"] == "time budget"
    assert done["result"]["stop_reason"] == "time budget" and done["progress"]["phase"] == "publishing"


def test_a_job_cancelled_during_evaluation_stops_at_the_next_optimizer(client) -> None:
    from l2l_plugin.pipeline import PhaseProgress
    from l2l_plugin.training import MetaTrainingCancelled

    job, _, reporter = _claimed_reporter(client)
    reporter.on_phase(PhaseProgress("evaluating", 1, 5))  # not cancelled: goes on
    assert client.delete(f"/jobs/{job['id']}", headers=auth()).status_code == 202
    with pytest.raises(MetaTrainingCancelled, match=r"cancelled while evaluating \(2/5\)"):
        reporter.on_phase(PhaseProgress("evaluating", 2, 5))


def test_a_job_store_from_before_the_phase_columns_gets_them(tmp_path: Path) -> None:
    from sqlalchemy import inspect, text

    from l2l_api.db import ADDED_COLUMNS, JobStore

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    old = JobStore(url)
    old.create("a" * 32, "quadratic", {}, {}, True, 6, None)
    with old.engine.begin() as connection:
        for name in ADDED_COLUMNS:
            connection.execute(text(f"ALTER TABLE l2l_jobs DROP COLUMN {name}"))
    old.dispose()
    store = JobStore(url)
    columns = {column["name"] for column in inspect(store.engine).get_columns("l2l_jobs")}
    assert set(ADDED_COLUMNS) <= columns
    job = store.get("a" * 32)
    assert job is not None and job.phase is None and job.stop_reason is None
    claimed = store.claim(0, 1)
    assert claimed is not None
    assert store.report_progress(claimed.id, 1, phase="evaluating", phase_done=1, phase_total=3) == (True, False)
    assert (store.get(claimed.id).phase_done, store.get(claimed.id).phase_total) == (1, 3)


# -- registered optimizers (nothing registered in this store) -------------------------------------


def test_optimizer_endpoints_without_registered_versions(client) -> None:
    assert client.get("/optimizers").json() == []
    response = client.get("/optimizers/quadratic")
    assert response.status_code == 404
    assert "no optimizer is registered" in response.json()["detail"]
    assert client.get("/optimizers/quadratic/champion").status_code == 404
    assert client.get("/optimizers/quadratic/1/files").status_code == 404
    assert client.get("/optimizers/bad'name").status_code == 422  # never reaches an MLflow filter


def test_optimizer_endpoints_when_mlflow_fails(client, monkeypatch) -> None:
    from mlflow.exceptions import MlflowException

    from l2l_api.routes import optimizers as optimizers_route

    def failing(error: Exception):
        def call(*args, **kwargs):
            raise error

        return call

    monkeypatch.setattr(optimizers_route, "list_versions", failing(ConnectionError("refused")))
    response = client.get("/optimizers/quadratic")
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    assert response.json()["detail"] == "MLflow is unreachable: ConnectionError"
    monkeypatch.setattr(optimizers_route, "list_versions", failing(MlflowException("db is locked")))
    assert client.get("/optimizers/quadratic/1").json()["detail"] == "MLflow error: INTERNAL_ERROR"
    monkeypatch.setattr(optimizers_route, "list_families", failing(MlflowException("db is locked")))
    assert client.get("/optimizers").status_code == 503


# -- errors never carry a traceback ----------------------------------------------------------------


def test_unexpected_errors_are_500_without_a_traceback(client, monkeypatch) -> None:
    from l2l_api.routes import families as families_route

    def explode():
        raise RuntimeError("secret internal detail /etc/shadow")

    monkeypatch.setattr(families_route, "discover_families", explode)
    response = client.get("/families")
    assert response.status_code == 500
    text = response.text
    assert "Traceback" not in text and "secret" not in text and "RuntimeError" not in text
    assert response.json()["detail"].startswith("internal server error (id ")


def test_non_finite_numbers_are_rendered_as_null() -> None:
    from l2l_api.errors import json_response
    from l2l_api.schemas import JobProgress

    body = json_response({"a": float("inf"), "b": [1.0, float("nan")], "c": {"d": -float("inf")}}).body
    assert json.loads(body) == {"a": None, "b": [1.0, None], "c": {"d": None}}
    # Response models go through pydantic's serializer, which writes them as null too.
    progress = JobProgress(
        phase=None,
        phase_done=None,
        phase_total=None,
        iterations_done=1,
        iterations_total=2,
        meta_loss=float("nan"),
        validation_loss=None,
        best_validation_loss=float("inf"),
    )
    dumped = json.loads(progress.model_dump_json())
    assert dumped["meta_loss"] is None and dumped["best_validation_loss"] is None


# -- restart semantics (the job store survives; no worker needed) ----------------------------------


def _interrupted_job(client) -> dict:
    """A job a worker had taken when the service died (its record still says running)."""
    job = client.post("/meta-train", json=tiny_request(), headers=auth()).json()
    assert client.app.state.store.claim(0, 999_999) is not None
    return job


def test_a_restart_queues_a_running_job_again_to_resume_it(mlflow_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with api_client(data, workers=0, token=TOKEN) as client:
        job = _interrupted_job(client)
        checkpoint = data / "api" / "jobs" / job["id"] / "checkpoint" / "checkpoint.pt"
        checkpoint.parent.mkdir(parents=True)
        checkpoint.write_bytes(b"")  # only its presence matters to the message
        client.app.state.store.requeue = lambda *args, **kwargs: True  # the shutdown must not requeue it
    with api_client(data, workers=0, token=TOKEN) as client:
        again = client.get(f"/jobs/{job['id']}").json()
    assert again["state"] == "queued" and again["attempt"] == 1
    assert again["message"] == "the service stopped during attempt 1; will resume from its last checkpoint"


def test_a_job_interrupted_too_often_is_failed_with_the_reason(mlflow_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with api_client(data, workers=0, token=TOKEN) as client:
        job = _interrupted_job(client)
        client.app.state.store.requeue = lambda *args, **kwargs: True
    with api_client(data, workers=0, token=TOKEN, max_resumes=0) as client:
        failed = client.get(f"/jobs/{job['id']}").json()
    assert failed["state"] == "failed" and failed["stop_reason"] == "interrupted too often"
    assert failed["error"] == (
        "the service stopped while this job was running (interruption 1; L2L_API_MAX_RESUMES=0): "
        "not resumed again"
    )
    from mlflow import MlflowClient

    assert MlflowClient().get_run(job["mlflow_run_id"]).info.status == "FAILED"


def test_a_clean_shutdown_puts_running_jobs_back_in_the_queue(mlflow_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with api_client(data, workers=0, token=TOKEN) as client:
        job = _interrupted_job(client)
        cancelled = client.post("/meta-train", json=tiny_request(), headers=auth()).json()
        client.app.state.store.claim(0, 999_999)
        assert client.delete(f"/jobs/{cancelled['id']}", headers=auth()).status_code == 202
    with api_client(data, workers=0, token=TOKEN) as client:
        again = client.get(f"/jobs/{job['id']}").json()
        gone = client.get(f"/jobs/{cancelled['id']}").json()
    assert again["state"] == "queued"
    assert again["message"] == "the service was shut down; the job resumes when it starts again"
    assert gone["state"] == "cancelled"  # a cancellation asked for before the shutdown stands


# -- the pool's limits (its checks called directly; no worker process) ------------------------------


def test_a_cancellation_not_honoured_in_time_stops_the_worker(client) -> None:
    import time

    job = client.post("/meta-train", json=tiny_request(), headers=auth()).json()
    client.app.state.store.claim(0, 999_999)
    assert client.delete(f"/jobs/{job['id']}", headers=auth()).status_code == 202
    pool = client.app.state.pool
    pool.settings = pool.settings.model_copy(update={"cancel_grace_seconds": 0.01})
    time.sleep(0.05)
    pool._enforce_limits()
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["state"] == "cancelled" and done["stop_reason"] == "cancelled"
    assert done["message"].startswith("cancelled: the worker was stopped after 0.01 s")


def test_an_attempt_over_the_time_limit_fails(client, caplog) -> None:
    import logging
    import time

    caplog.set_level(logging.INFO, logger="l2l_api")
    job = client.post("/meta-train", json=tiny_request(), headers=auth()).json()
    client.app.state.store.claim(0, 999_999)
    pool = client.app.state.pool
    pool.settings = pool.settings.model_copy(update={"job_timeout_seconds": 0.01})
    time.sleep(0.05)
    pool._enforce_limits()
    done = client.get(f"/jobs/{job['id']}").json()
    assert done["state"] == "failed" and done["error"].startswith("exceeded the job time limit of 0.01 s")
    assert done["stop_reason"] == "job time limit"

    from mlflow import MlflowClient

    run = MlflowClient().get_run(job["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["l2l.stop_reason"] == "job time limit"
    # The service log's line for the job's end: state, duration, stop reason, version, promotion.
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith(f"job {job['id']} failed:"))
    assert "duration " in line and "stop reason job time limit" in line
    assert "version none, promoted -" in line and "error: exceeded the job time limit" in line
