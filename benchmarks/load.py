"""Load on the real service (`l2l serve`, uvicorn) over loopback: requests per second and
latency percentiles of GET /health, GET /families, GET /optimizers/{family} and
POST /meta-train, idle and while a meta-training job runs.

    .venv/bin/python benchmarks/load.py                 # 10 s per scenario, 8 connections
    .venv/bin/python benchmarks/load.py --seconds 5 --concurrency 16 --out benchmarks/results/load.json

The load generator is ApacheBench (`ab`, Debian's apache2-utils: C, keep-alive connections)
when it is on PATH, else a Python asyncio client (httpx), which costs more CPU per request and
so understates the service on a small machine; the output says which was used. Generator and
service share the machine's cores, so the figures are for this machine, not the service alone.

Two services on one data directory: first with one worker (a tiny job registers a version so
GET /optimizers/{family} has one, then a long job keeps the worker busy: "job running"), then
with no worker ("idle": POSTs queue jobs that nothing runs). POSTed jobs are tiny quadratic
jobs with register=false; the queue limit is raised so that every POST is a real submission
(validation, the queue check, a job row) rather than a 429. The first POST of a service creates
its job's MLflow run itself; later ones leave it to the worker that starts the job
(api/README.md "A job's MLflow run"), which during the measurement is busy with the long job
(or, idle, absent): the POST figures are what a client waits for, the runs are made later.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from machine import machine_info  # noqa: E402
from test_api_support import TOKEN, LiveService, empty_mlflow_store, tiny_request, wait_for  # noqa: E402

FAMILY = "quadratic"
LONG_JOB = {"meta_iterations": 20000, "checkpoint_every": 1000, "validation_every": 10000, "max_seconds": 3000}


def _post_body() -> dict[str, Any]:
    return tiny_request(register=False)


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


# -- generators --------------------------------------------------------------------------------------


def run_ab(url: str, seconds: float, concurrency: int, body: dict[str, Any] | None) -> dict[str, Any]:
    command = ["ab", "-q", "-k", "-t", f"{seconds:g}", "-n", "10000000", "-c", str(concurrency), "-H", f"Authorization: Bearer {TOKEN}"]
    body_file = None
    if body is not None:
        body_file = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
        json.dump(body, body_file)
        body_file.close()
        command += ["-p", body_file.name, "-T", "application/json"]
    output = subprocess.run([*command, url], capture_output=True, text=True, timeout=seconds + 120).stdout
    if body_file is not None:
        os.unlink(body_file.name)

    def number(pattern: str, default: float = 0.0) -> float:
        match = re.search(pattern, output)
        return float(match.group(1)) if match else default

    return {
        "requests": int(number(r"Complete requests:\s+(\d+)")),
        "failed": int(number(r"Failed requests:\s+(\d+)")),
        "non_2xx": int(number(r"Non-2xx responses:\s+(\d+)")),
        "req_per_s": number(r"Requests per second:\s+([\d.]+)"),
        "p50_ms": number(r"\n\s+50%\s+(\d+)"),
        "p99_ms": number(r"\n\s+99%\s+(\d+)"),
        "max_ms": number(r"\n\s+100%\s+(\d+)"),
    }


def run_python(url: str, seconds: float, concurrency: int, body: dict[str, Any] | None) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    statuses: list[int] = []

    async def worker(client: httpx.AsyncClient, deadline: float) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            if body is None:
                response = await client.get(url)
            else:
                response = await client.post(url, json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            statuses.append(response.status_code)

    async def main() -> float:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
            started = time.perf_counter()
            deadline = started + seconds
            await asyncio.gather(*(worker(client, deadline) for _ in range(concurrency)))
            return time.perf_counter() - started

    elapsed = asyncio.run(main())
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "failed": 0,
        "non_2xx": sum(not 200 <= status < 300 for status in statuses),
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": _percentile(ordered, 50),
        "p99_ms": _percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else float("nan"),
    }


# -- scenarios -----------------------------------------------------------------------------------------


def scenarios(live: LiveService, seconds: float, concurrency: int, generator: str, condition: str) -> list[dict[str, Any]]:
    run = run_ab if generator == "ab" else run_python
    results = []
    for method, path, body, clients in (
        ("GET", "/health", None, concurrency),
        ("GET", "/families", None, concurrency),
        ("GET", f"/optimizers/{FAMILY}", None, concurrency),
        ("POST", "/meta-train", _post_body(), max(1, concurrency // 2)),
        ("POST", "/meta-train", _post_body(), 1),  # one client: the latency of a submission alone
    ):
        figures = run(live.base + path, seconds, clients, body)
        figures.update(condition=condition, method=method, path=path, concurrency=clients)
        print(
            f"{condition:12s} {method:4s} {path:24s} c={clients:<3d} {figures['req_per_s']:8.1f} req/s  "
            f"p50 {figures['p50_ms']:7.1f} ms  p99 {figures['p99_ms']:7.1f} ms  "
            f"({figures['requests']} requests, {figures['non_2xx']} non-2xx)",
            flush=True,
        )
        results.append(figures)
        if method == "POST":
            _cancel_queued(live)
    return results


def _cancel_queued(live: LiveService) -> None:
    """The POSTed jobs are not what is measured: out of the queue, so the next scenario is alike."""
    while True:
        status, listing = live.request("GET", "/jobs?state=queued&limit=500")
        if status != 200 or not listing["jobs"]:
            return
        for job in listing["jobs"]:
            live.request("DELETE", f"/jobs/{job['id']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    parser.add_argument("--concurrency", type=int, default=8, help="connections for the GETs (POST: half)")
    parser.add_argument("--generator", choices=["auto", "ab", "python"], default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "load.json")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE",
        help="a service setting for both services (e.g. L2L_API_WORKER_NICENESS=0); repeatable",
    )
    args = parser.parse_args()
    generator = args.generator if args.generator != "auto" else ("ab" if shutil.which("ab") else "python")
    root = Path(tempfile.mkdtemp(prefix="l2l-load-"))
    data = root / "data"
    empty_mlflow_store(data / "mlflow")
    env = {"L2L_API_MAX_QUEUED": "1000000", "L2L_API_JOB_TIMEOUT_SECONDS": "7200"}
    env.update(assignment.split("=", 1) for assignment in args.env)
    results: list[dict[str, Any]] = []
    print(f"generator: {generator}; load before: {os.getloadavg()}", flush=True)

    busy = LiveService(data, root / "busy.log", env=env, workers=1).start()
    try:
        status, job = busy.request("POST", "/meta-train", tiny_request())
        assert status == 202, job
        done = wait_for(lambda: busy.job(job["id"]), lambda j: j["state"] in ("succeeded", "failed", "cancelled"), 300)
        assert done["state"] == "succeeded", done
        status, long_job = busy.request(
            "POST", "/meta-train", tiny_request(register=False, meta_overrides={**tiny_request()["meta_overrides"], **LONG_JOB})
        )
        assert status == 202, long_job
        wait_for(lambda: busy.job(long_job["id"]), lambda j: j["progress"]["iterations_done"] > 0, 120)
        results += scenarios(busy, args.seconds, args.concurrency, generator, "job running")
        assert busy.job(long_job["id"])["state"] == "running", "the long job ended during the measurement"
        busy.request("DELETE", f"/jobs/{long_job['id']}")
    finally:
        busy.stop()

    idle = LiveService(data, root / "idle.log", env=env, workers=0).start()
    try:
        results += scenarios(idle, args.seconds, args.concurrency, generator, "idle")
    finally:
        idle.stop()

    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "generator": generator,
        "seconds_per_scenario": args.seconds,
        "service_env": env,
        "machine": machine_info(),
        "load_average_after": os.getloadavg(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"load after: {os.getloadavg()}; written {args.out}")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
