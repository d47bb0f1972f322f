"""Jobs run by a real worker process (TestClient app with workers=1): success with and without
registering (the latter stopped by its time budget), the phases and stop reasons they report,
the optimizer endpoints on the version it made, cancellation, and a worker that dies. (The pool's cancel-grace and time-limit checks are tested without a worker in test_api.py.)"""

from __future__ import annotations

import io
import os
import signal
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

import torch  # noqa: E402
from test_api_support import TERMINAL, TOKEN, api_client, auth, isolated_mlflow, tiny_request, wait_for  # noqa: E402

from l2l_plugin import LearnedOptimizer  # noqa: E402

JOB_SECONDS = 180  # generous: the worker shares 2 cores with the test process

# Long enough to be caught while running (about 25 ms per meta-iteration), stopped by the test.
LONG = {"meta_iterations": 5000, "checkpoint_every": 50, "validation_every": 1000, "max_seconds": 300}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("api-jobs")
    with isolated_mlflow(root / "mlflow"), api_client(root / "data", workers=1, token=TOKEN) as test_client:
        wait_for(lambda: test_client.get("/health", headers=auth()).json(), lambda h: h["workers"]["alive"] == 1, 60)
        yield test_client


def submit(client, **changes) -> dict:
    response = client.post("/meta-train", json=tiny_request(**changes), headers=auth())
    assert response.status_code == 202, response.text
    return response.json()


def finished(client, job_id: str, timeout: float = JOB_SECONDS) -> dict:
    return wait_for(
        lambda: client.get(f"/jobs/{job_id}").json(), lambda job: job["state"] in TERMINAL, timeout
    )


def running(client, job_id: str) -> dict:
    return wait_for(
        lambda: client.get(f"/jobs/{job_id}").json(),
        lambda job: job["state"] != "queued" and job["progress"]["iterations_done"] > 0,
        JOB_SECONDS,
    )


def long_overrides() -> dict:
    return {**tiny_request()["meta_overrides"], **LONG}


@pytest.fixture(scope="module")
def registered_job(client) -> dict:
    job = finished(client, submit(client)["id"])
    assert job["state"] == "succeeded", job
    return job


def test_a_job_runs_in_a_worker_and_registers_a_version(client, registered_job) -> None:
    job = registered_job
    assert job["attempt"] == 1 and job["error"] is None
    assert job["progress"]["iterations_done"] == job["progress"]["iterations_total"] == 6
    assert job["progress"]["meta_loss"] is not None and job["progress"]["best_validation_loss"] is not None
    result = job["result"]
    assert result["registered"] is True and result["model_name"] == "l2l-quadratic"
    assert result["optimizer_uri"] == f"models:/l2l-quadratic/{result['model_version']}"
    assert isinstance(result["promoted"], bool) and result["promotion_reason"]
    assert job["stop_reason"] == result["stop_reason"] == "completed"
    assert (job["progress"]["phase"], job["progress"]["phase_done"]) == ("publishing", None)  # its last phase

    from mlflow import MlflowClient

    run = MlflowClient().get_run(job["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert "meta_loss" in run.data.metrics and "eval.learned.final_loss_mean" in run.data.metrics
    assert run.data.tags["l2l.registered_version"] == result["model_version"]
    tags = run.data.tags
    assert (tags["l2l.phase"], tags["l2l.phase_progress"], tags["l2l.stop_reason"]) == (
        "publishing",
        "5/5",  # the learned optimizer and the four tuned baselines, reported as they finished
        "completed",
    )


def test_optimizer_endpoints_on_the_registered_version(client, registered_job, tmp_path: Path) -> None:
    version = registered_job["result"]["model_version"]
    assert {"family": "quadratic", "model_name": "l2l-quadratic", "versions": 1}.items() <= (
        client.get("/optimizers").json()[0].items()
    )
    listing = client.get("/optimizers/quadratic").json()
    assert [v["version"] for v in listing["versions"]] == [version]
    assert "eval.learned.final_loss_mean" in listing["versions"][0]["metrics"]
    assert listing["versions"][0]["run_id"] == registered_job["mlflow_run_id"]
    cost = listing["versions"][0]["cost_profile"]  # measured where it was trained
    assert cost["step_ms"] > 0 and cost["adam_step_ms"] > 0 and cost["state_bytes_per_parameter"] == 4 * (80 + 0)

    detail = client.get(f"/optimizers/quadratic/{version}").json()
    assert detail["load_uri"] == f"models:/l2l-quadratic/{version}"
    assert detail["manifest"]["family"] == "quadratic" and detail["manifest"]["family_config"]["dim"] == 4
    assert "load_optimizer('models:/l2l-quadratic/" in detail["load_example"]
    assert client.get("/optimizers/quadratic/latest").json()["version"] == version

    missing = client.get("/optimizers/quadratic/7")
    assert missing.status_code == 404 and "versions: 1" in missing.json()["detail"]
    if not registered_job["result"]["promoted"]:
        assert client.get("/optimizers/quadratic/champion").status_code == 404
        from l2l_registry import promote

        promote("quadratic", version, reason="test")
    champion = client.get("/optimizers/quadratic/champion").json()
    assert champion["champion"] is True and champion["load_uri"] == "models:/l2l-quadratic@champion"
    assert client.get("/optimizers/quadratic").json()["champion_uri"] == "models:/l2l-quadratic@champion"

    response = client.get("/optimizers/quadratic/champion/files")
    assert response.status_code == 200 and response.headers["content-type"] == "application/zip"
    assert f"l2l-quadratic-v{version}.zip" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["optimizer.json", "weights.safetensors"]
        archive.extractall(tmp_path / "files")
    from l2l_registry import load_optimizer

    theta = torch.zeros(4, requires_grad=True)
    optimizer = load_optimizer(tmp_path / "files", [theta])  # no MLflow involved
    assert isinstance(optimizer, LearnedOptimizer)


def test_an_unregistered_job_stopped_by_its_budget_keeps_its_optimizer_in_its_run(client) -> None:
    budget = {**tiny_request()["meta_overrides"], "meta_iterations": 20_000, "max_seconds": 2}
    job = finished(client, submit(client, register=False, meta_overrides=budget)["id"])
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["registered"] is False and result["model_version"] is None
    assert result["optimizer_uri"] == f"runs:/{job['mlflow_run_id']}/optimizer"
    assert job["stop_reason"] == result["stop_reason"] == "time budget"
    assert 0 < job["progress"]["iterations_done"] < 20_000 and job["progress"]["phase"] == "publishing"

    from mlflow import MlflowClient

    tags = MlflowClient().get_run(job["mlflow_run_id"]).data.tags
    assert (tags["l2l.stop_reason"], tags["l2l.phase"]) == ("time budget", "publishing")
    from l2l_registry import load_optimizer

    theta = torch.zeros(4, requires_grad=True)
    assert isinstance(load_optimizer(result["optimizer_uri"], [theta]), LearnedOptimizer)


def test_cancelling_a_running_job_stops_its_worker_run(client) -> None:
    job = submit(client, register=False, meta_overrides=long_overrides())
    running(client, job["id"])
    response = client.delete(f"/jobs/{job['id']}", headers=auth())
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    done = finished(client, job["id"], 60)
    assert done["state"] == "cancelled", done
    assert done["message"].startswith("cancelled: cancelled at meta-iteration")
    assert done["progress"]["iterations_done"] < 5000
    assert done["stop_reason"] == "cancelled" and done["progress"]["phase"] == "meta-training"

    from mlflow import MlflowClient

    run = MlflowClient().get_run(done["mlflow_run_id"])  # the run its worker created (POST left it)
    assert run.info.status == "KILLED" and run.data.tags["l2l.stop_reason"] == "cancelled"


def test_a_worker_that_dies_before_a_checkpoint_fails_its_job_and_is_replaced(client) -> None:
    # No checkpoint within reach: a death this early is most likely deterministic (out of memory).
    job = submit(client, register=False, meta_overrides={**long_overrides(), "checkpoint_every": 4000})
    running(client, job["id"])
    worker = client.get("/health", headers=auth()).json()["workers"]["processes"][0]
    assert worker["job_id"] == job["id"]
    os.kill(worker["pid"], signal.SIGKILL)  # as the kernel's OOM killer would
    done = finished(client, job["id"], 30)
    assert done["state"] == "failed"
    assert done["error"] == "the worker process running this job ended unexpectedly (killed by SIGKILL)"
    assert done["stop_reason"] == "worker died"

    from mlflow import MlflowClient

    # The supervisor ends the MLflow run just after it has failed the job record.
    run = wait_for(
        lambda: MlflowClient().get_run(done["mlflow_run_id"]).to_dictionary(),
        lambda run: run["info"]["status"] != "RUNNING",
        10,
    )
    assert run["info"]["status"] == "FAILED" and run["data"]["tags"]["l2l.stop_reason"] == "worker died"
    health = wait_for(lambda: client.get("/health", headers=auth()).json(), lambda h: h["workers"]["alive"] == 1, 60)
    assert health["workers"]["processes"][0]["pid"] != worker["pid"]


def test_a_worker_killed_after_a_checkpoint_resumes_its_job(client) -> None:
    """Issue 13, defect 6: a killed service resumed its job from the checkpoint, a killed worker
    failed it; now both resume (up to L2L_API_MAX_RESUMES), and the job says why."""
    job = submit(client, register=False, meta_overrides={**long_overrides(), "checkpoint_every": 5})
    wait_for(
        lambda: client.get(f"/jobs/{job['id']}").json(),
        lambda job: job["progress"]["iterations_done"] > 12,  # checkpoints at 5 and 10
        JOB_SECONDS,
    )
    worker = client.get("/health", headers=auth()).json()["workers"]["processes"][0]
    assert worker["job_id"] == job["id"]
    os.kill(worker["pid"], signal.SIGKILL)
    resumed = wait_for(
        lambda: client.get(f"/jobs/{job['id']}").json(),
        lambda job: job["attempt"] == 2 and (job["message"] or "").startswith("resumed"),
        JOB_SECONDS,
    )
    assert resumed["state"] == "running", resumed
    assert resumed["message"].startswith("resumed (attempt 2) from the checkpoint at meta-iteration"), resumed
    assert "killed by SIGKILL" in resumed["message"]
    assert client.delete(f"/jobs/{job['id']}", headers=auth()).status_code == 202
    assert finished(client, job["id"], 60)["state"] == "cancelled"


def test_publishing_waits_for_the_champion_lock(client) -> None:
    """Issue 13, defect 7: the worker reads and moves the champion under the lock other
    publishers hold (here: this test, through the job database's lock)."""
    from l2l_api.db import JobStore

    store = JobStore(client.app.state.settings.job_database_url)
    with store.champion_lock("l2l-quadratic"):
        job = submit(client)
        publishing = wait_for(
            lambda: client.get(f"/jobs/{job['id']}").json(),
            lambda job: job["progress"]["phase"] == "publishing" or job["state"] in TERMINAL,
            JOB_SECONDS,
        )
        assert publishing["state"] == "running", publishing
        time.sleep(3)
        held = client.get(f"/jobs/{job['id']}").json()
        assert held["state"] == "running" and held["progress"]["phase"] == "publishing"
    done = finished(client, job["id"])
    assert done["state"] == "succeeded", done
    store.dispose()


def test_workers_run_below_the_service_priority(client) -> None:
    """L2L_API_WORKER_NICENESS (10): meta-training yields the CPU to the HTTP process."""
    worker = wait_for(lambda: client.get("/health", headers=auth()).json(), lambda h: h["workers"]["alive"] == 1, 60)
    pid = worker["workers"]["processes"][0]["pid"]
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)


def test_an_ntm_bfgs_job_publishes_an_optimizer_that_loads_from_the_service(client, tmp_path: Path) -> None:
    """network.kind=ntm_bfgs through POST /meta-train → worker → registry → GET …/files → torch.optim."""
    meta = tiny_request()["meta_overrides"]
    meta["network"] = {**meta.get("network", {}), "kind": "ntm_bfgs", "memory": {"slots": 2}}
    job = finished(client, submit(client, meta_overrides=meta)["id"])
    assert job["state"] == "succeeded", job
    version = job["result"]["model_version"]
    detail = client.get(f"/optimizers/quadratic/{version}").json()
    assert detail["manifest"]["network"]["kind"] == "ntm_bfgs"
    response = client.get(f"/optimizers/quadratic/{version}/files")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        archive.extractall(tmp_path / "files")
    from l2l_registry import load_optimizer

    theta = torch.zeros(4, requires_grad=True)
    optimizer = load_optimizer(tmp_path / "files", [theta])
    assert optimizer.net.config.memory is not None and optimizer.net.config.memory.slots == 2
    loss = (theta - 1).square().sum()
    loss.backward()
    optimizer.step(loss=loss)
    assert not torch.equal(theta, torch.zeros(4)) and "memory" in optimizer.state[theta]
