"""The real service: `l2l serve` (uvicorn) on 127.0.0.1 with its own port and data directory.

1. POST a small quadratic meta-train, poll until it succeeds, then load the registered optimizer
   in a separate Python process and train with it.
2. Kill the service (SIGKILL) while a job runs, start it again on the same data directory, and
   see the job resumed from its checkpoint (then cancel it, to keep the test short).

Both tests share one data directory and run in this order: the second restarts the first's
service.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from test_api_support import (  # noqa: E402
    TERMINAL,
    LiveService,
    empty_mlflow_store,
    tiny_request,
    wait_for,
)

JOB_SECONDS = 180


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("api-e2e")
    empty_mlflow_store(root / "data" / "mlflow")
    live = LiveService(root / "data", root / "server.log").start()
    holder = {"service": live}
    yield holder
    holder["service"].stop()


LOAD_AND_TRAIN = textwrap.dedent(
    """
    import json, sys
    import torch
    from l2l_registry import load_optimizer

    uri = sys.argv[1]
    generator = torch.Generator().manual_seed(7)
    weights, targets = torch.randn(4, 4, generator=generator), torch.randn(4, generator=generator)
    theta = torch.zeros(4, requires_grad=True)
    optimizer = load_optimizer(uri, [theta], family="quadratic")

    def closure():
        optimizer.zero_grad()
        loss = (weights @ theta - targets).square().sum()
        loss.backward()
        return loss

    losses = [float(optimizer.step(closure)) for _ in range(20)]
    print(json.dumps({"optimizer": type(optimizer).__name__, "losses": losses,
                      "theta": theta.detach().tolist()}))
    """
)


def test_meta_train_over_http_then_load_in_another_process(service, tmp_path: Path) -> None:
    live: LiveService = service["service"]
    status, health = live.request("GET", "/health")
    assert status == 200 and health["status"] == "ok", health

    status, body = live.request("POST", "/meta-train", tiny_request(), token=None)
    assert status == 401, body
    status, job = live.request("POST", "/meta-train", tiny_request())
    assert status == 202, job
    done = wait_for(lambda: live.job(job["id"]), lambda j: j["state"] in TERMINAL, JOB_SECONDS, 0.5)
    assert done["state"] == "succeeded", (done, live.log())
    uri = done["result"]["optimizer_uri"]
    assert uri == f"models:/l2l-quadratic/{done['result']['model_version']}"
    # The service log says how the job ended, in one line.
    promoted = "yes" if done["result"]["promoted"] else "no"
    ended = next(line for line in live.log().splitlines() if f"job {job['id']} succeeded:" in line)
    assert "stop reason completed" in ended and "meta-iterations 6/6" in ended
    assert f"version l2l-quadratic/{done['result']['model_version']}, promoted {promoted}" in ended

    status, detail = live.request("GET", f"/optimizers/quadratic/{done['result']['model_version']}")
    assert status == 200 and detail["load_uri"] == uri

    # A training job elsewhere: a fresh interpreter that only knows the registry's location.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("L2L_", "MLFLOW_TRACKING"))}
    env.update(
        L2L_MLFLOW_DIR=str(live.data_dir / "mlflow"),
        MLFLOW_DISABLE_TELEMETRY="true",
        MLFLOW_ALLOW_PICKLE_DESERIALIZATION="false",
    )
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_TRAIN, uri],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = json.loads(result.stdout.strip().splitlines()[-1])
    assert trained["optimizer"] == "LearnedOptimizer"
    assert len(trained["losses"]) == 20 and all(abs(loss) < float("inf") for loss in trained["losses"])
    assert any(value != 0.0 for value in trained["theta"])  # it moved the parameters


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by init) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_a_killed_service_resumes_its_running_job_after_a_restart(service) -> None:
    live: LiveService = service["service"]
    overrides = {
        **tiny_request()["meta_overrides"],
        "meta_iterations": 3000,  # far more than the test waits for: it cancels the job at the end
        "checkpoint_every": 5,
        "validation_every": 1000,
        "max_seconds": 600,
    }
    status, job = live.request("POST", "/meta-train", tiny_request(register=False, meta_overrides=overrides))
    assert status == 202, job
    before = wait_for(
        lambda: live.job(job["id"]), lambda j: j["progress"]["iterations_done"] >= 20, JOB_SECONDS, 0.1
    )
    assert before["state"] == "running" and before["attempt"] == 1
    worker_pid = live.request("GET", "/health")[1]["workers"]["processes"][0]["pid"]

    live.kill()
    # The worker dies with the service (parent-death signal): it cannot race the next one.
    deadline = time.monotonic() + 10
    while not _gone(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker_pid), "the worker outlived the killed service"

    restarted = LiveService(live.data_dir, live.log_path)
    service["service"] = restarted
    restarted.start()
    resumed = wait_for(
        lambda: restarted.job(job["id"]),
        lambda j: j["attempt"] == 2 and (j["message"] or "").startswith("resumed"),
        JOB_SECONDS,
        0.2,
    )
    assert resumed["state"] == "running", resumed
    found = re.fullmatch(r"resumed \(attempt 2\) from the checkpoint at meta-iteration (\d+); before: (.*)", resumed["message"])
    assert found, resumed["message"]
    checkpoint_iteration = int(found[1])
    assert checkpoint_iteration >= 5  # not from scratch
    assert found[2] == "the service stopped during attempt 1; will resume from its last checkpoint"
    assert before["mlflow_run_id"] and resumed["mlflow_run_id"] == before["mlflow_run_id"]  # the same run goes on

    status, cancelling = restarted.request("DELETE", f"/jobs/{job['id']}")
    assert status == 202, cancelling
    done = wait_for(lambda: restarted.job(job["id"]), lambda j: j["state"] in TERMINAL, 60, 0.2)
    assert done["state"] == "cancelled", done
    assert done["progress"]["iterations_done"] > checkpoint_iteration
    ended = wait_for(
        lambda: {"log": restarted.log()}, lambda log: f"job {job['id']} cancelled:" in log["log"], 10, 0.2
    )["log"]
    line = next(line for line in ended.splitlines() if f"job {job['id']} cancelled:" in line)
    assert "attempt 2, stop reason cancelled" in line and "promoted -" in line
