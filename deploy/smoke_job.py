"""The service in a container used over HTTP (deploy/image-smoke, deploy/compose-smoke).

    python deploy/smoke_job.py BASE_URL TOKEN WORK_DIR [--summary FILE]

Waits for /health (a live worker), runs a tiny meta-training job on quadratic that must end
``succeeded`` with a registered version, downloads that version's files and loads them with
``load_optimizer`` in this (the host's) venv, and trains 20 steps with them. Writes what it saw
(job id, run id, version, timings) as JSON to --summary for the caller's own checks.
Exit status: 0 green, 1 (with the reason) otherwise.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

# Small enough for a loaded 2-core machine: 6 meta-iterations, a 4-dimensional quadratic.
META_OVERRIDES = {
    "meta_batch_size": 8, "horizon": 10, "unroll_length": 5, "meta_iterations": 6, "validation_every": 3,
    "validation_tasks": 4,
    "evaluation": {"test_tasks": 6, "tuning_tasks": 3, "lr_min": 1e-3, "lr_max": 1.0, "lr_points_per_decade": 1},
}


def say(text: str) -> None:
    print(f"smoke_job: {text}", file=sys.stderr, flush=True)


class Service:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base.rstrip("/"), token

    def call(self, method: str, path: str, body: Any = None, raw: bool = False) -> Any:
        request = urllib.request.Request(
            self.base + path, method=method, data=None if body is None else json.dumps(body).encode()
        )
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read()
            return data if raw else json.loads(data)

    def post_retrying(self, path: str, body: Any, limit: float) -> tuple[Any, int]:
        """POST, honouring 503 + Retry-After (the service's answer while MLflow is slow or
        unreachable, e.g. a server still warming up) until ``limit`` seconds; (answer, retries)."""
        started, retries = time.monotonic(), 0
        while True:
            try:
                return self.call("POST", path, body), retries
            except urllib.error.HTTPError as error:
                wait = float(error.headers.get("Retry-After") or 5)
                if error.code != 503 or time.monotonic() - started + wait > limit:
                    raise SystemExit(
                        f"smoke_job: POST {path} answered {error.code}: {error.read().decode()[:500]}"
                    ) from None
                retries += 1
                say(f"POST {path}: 503, retrying in {wait:.0f} s ({error.read().decode()[:200]})")
                time.sleep(wait)

    def wait_healthy(self, limit: float) -> tuple[dict[str, Any], float, float]:
        """Wait for /health 200 with a live worker, then (bounded by the same limit) for its
        status ``ok`` (MLflow answering too); (last answer, seconds to 200, seconds to ok)."""
        started = time.monotonic()
        first: float | None = None
        health: dict[str, Any] = {}
        while True:
            try:
                health = self.call("GET", "/health")
                if health["workers"]["alive"] >= 1:
                    first = time.monotonic() - started if first is None else first
                    if health["status"] == "ok":
                        return health, first, time.monotonic() - started
            except (urllib.error.URLError, ConnectionError, OSError, KeyError):
                pass
            if time.monotonic() - started > limit:
                if first is None:
                    raise SystemExit(f"smoke_job: no /health 200 with a live worker in {limit:.0f} s")
                say(f"/health still {health.get('status')} after {limit:.0f} s: {health.get('problems')}; going on")
                return health, first, time.monotonic() - started
            time.sleep(1)


def train_with(folder: Path) -> list[float]:
    import torch

    from l2l_registry import load_optimizer

    theta = torch.zeros(4, requires_grad=True)
    target = torch.arange(4.0)
    optimizer = load_optimizer(folder, [theta], family="quadratic")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = (theta - target).square().sum()
        loss.backward()
        return loss

    return [float(optimizer.step(closure).detach()) for _ in range(20)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("base")
    parser.add_argument("token")
    parser.add_argument("work", type=Path)
    parser.add_argument("--summary", type=Path)
    parser.add_argument("--health-limit", type=float, default=180.0)
    parser.add_argument("--job-limit", type=float, default=600.0)
    args = parser.parse_args(argv)
    service = Service(args.base, args.token)

    health, to_healthy, to_ok = service.wait_healthy(args.health_limit)
    say(f"/health 200 with a live worker {to_healthy:.0f} s after the wait began, {health['status']} after {to_ok:.0f} s")
    job, retries = service.post_retrying("/meta-train", {
        "family": "quadratic", "family_config": {"dim": 4}, "meta_overrides": META_OVERRIDES, "register": True,
    }, limit=args.health_limit)
    posted = time.monotonic()  # the job's time: from its 202 to its end
    while job["state"] in ("queued", "running"):
        if time.monotonic() - posted > args.job_limit:
            raise SystemExit(f"smoke_job: the job did not finish in {args.job_limit:.0f} s: {job}")
        time.sleep(1)
        job = service.call("GET", f"/jobs/{job['id']}")
    job_seconds = time.monotonic() - posted
    if job["state"] != "succeeded" or not (job.get("result") or {}).get("model_version"):
        raise SystemExit(f"smoke_job: the job ended {job['state']} without a registered version: {job}")
    version = job["result"]["model_version"]
    archive = service.call("GET", f"/optimizers/quadratic/{version}/files", raw=True)
    folder = args.work / "optimizer"
    zipfile.ZipFile(io.BytesIO(archive)).extractall(folder)
    losses = train_with(folder)
    if not all(loss == loss for loss in losses) or not losses[-1] < losses[0]:
        raise SystemExit(f"smoke_job: the downloaded optimizer did not train: {losses}")
    say(f"job {job['id'][:8]} succeeded in {job_seconds:.0f} s (version {version}, promoted {job['result']['promoted']}); "
        f"its files loaded in the host venv, loss {losses[0]:.3g} -> {losses[-1]:.3g} in 20 steps")
    if args.summary:
        args.summary.write_text(json.dumps({
            "job_id": job["id"], "mlflow_run_id": job.get("mlflow_run_id"), "model_name": job["result"].get("model_name"),
            "model_version": version, "to_healthy_s": round(to_healthy, 1), "to_ok_s": round(to_ok, 1), "job_s": round(job_seconds, 1),
            "post_retries": retries,
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
