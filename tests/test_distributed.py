"""Data-parallel meta-training on 2 gloo ranks (127.0.0.1, free ports), tiny quadratic configs.

- 2 ranks × meta-batch b give the weights of 1 rank × meta-batch 2b, a NaN on one rank's share
  skips the step on both, and the split evaluation gives the single-process report;
- rank 0's time budget stops both ranks at the same iteration;
- `l2l meta-train --nproc 2 --max-restarts 1`: a rank SIGKILLed mid-run, the group restarts
  from the checkpoint and finishes with the weights of an uninterrupted run;
- a plain `torchrun -m l2l_plugin.cli meta-train …` writes once, from rank 0.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pydantic import Field

from l2l_plugin.artifacts import load_trained_optimizer
from l2l_plugin.evaluation import evaluate
from l2l_plugin.families import TaskStack
from l2l_plugin.pipeline import resolve_meta_train_config
from l2l_plugin.training import MetaTrainConfig, meta_train
from l2l_plugin.training.checkpoint import CHECKPOINT_NAME
from l2l_plugin.training.distributed import Ranks, process_group, shard, shard_bounds
from l2l_plugin.training.distributed.launch import LaunchError, torchrun_arguments
from l2l_plugin.training.seeds import training_seed
from l2l_quadratic import QuadraticFamily

VENV_BIN = Path(sys.executable).parent
SHARE = 2  # each rank's meta-batch in the 2-rank runs
NET = {"preprocess_p": None, "loss_input": True, "output_scale": 0.1}
META: dict[str, Any] = {
    "network": NET,
    "meta_batch_size": SHARE,
    "horizon": 10,
    "unroll_length": 5,
    "meta_iterations": 8,
    "meta_lr": 3e-3,
    "meta_lr_schedule": "cosine",
    "grad_clip_norm": 1.0,
    "validation_every": 4,
    "validation_tasks": 3,  # odd: the ranks' shares differ
    "checkpoint_every": 2,
    "evaluation": {"test_tasks": 5, "tuning_tasks": 3, "lr_min": 1e-3, "lr_max": 1.0, "lr_points_per_decade": 1},
}
# Trajectory 1 of a 2-rank run: rank 1's first task (global index 1 * 2 * SHARE + SHARE).
POISONED_SEED = training_seed(0, 1 * 2 * SHARE + SHARE)


class _PoisonedStack(TaskStack):
    """The quadratic stack with NaN losses on the poisoned seeds' tasks (failure injection)."""

    def __init__(self, inner: TaskStack, poisoned: Sequence[bool]) -> None:
        self.inner = inner
        self.size = inner.size
        # Added, not torch.where: a NaN branch of where() would poison every task's gradient.
        self.offsets = torch.tensor([math.nan if bad else 0.0 for bad in poisoned])

    def init_params(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return self.inner.init_params(device)

    def losses(self, params: Mapping[str, torch.Tensor], step: int = 0) -> torch.Tensor:
        losses = self.inner.losses(params, step)
        return losses + self.offsets.to(losses.device)


class PoisonedQuadratic(QuadraticFamily):
    """Quadratics whose tasks of the ``poisoned`` seeds have NaN losses."""

    poisoned: list[int] = Field(default_factory=list)

    def sample_stack(self, seeds: Sequence[int]) -> TaskStack:
        return _PoisonedStack(super().sample_stack(seeds), [seed in self.poisoned for seed in seeds])


def _family() -> PoisonedQuadratic:
    return PoisonedQuadratic(dim=4, poisoned=[POISONED_SEED])


def _config(**overrides: Any) -> MetaTrainConfig:
    return MetaTrainConfig.model_validate({**META, **overrides})


def _rank_main(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank of the in-process group: meta-train, evaluate, then a run on a time budget."""
    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=dt.timedelta(seconds=60))
    torch.set_num_threads(1)
    with process_group(store, rank, world_size):
        result = meta_train(_family(), _config())
        report = evaluate(result.net, _family(), "quadratic", _config().evaluation, 10)
        budget = meta_train(_family(), _config(meta_iterations=100_000, max_seconds=1.0, validation_every=100_000))
    torch.save(
        {
            "weights": result.net.state_dict(),
            "skipped": result.skipped_nonfinite,
            "history": result.history,
            "report": report.model_dump_json(),
            "budget": (budget.iterations, budget.stop_reason),
        },
        Path(out) / f"rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    out = tmp_path_factory.mktemp("ranks")
    store = dist.TCPStore("127.0.0.1", 0, None, is_master=True, wait_for_workers=False)  # a free port
    mp.spawn(_rank_main, args=(2, store.port, str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{rank}.pt", weights_only=False) for rank in range(2)]


def test_two_ranks_hold_the_weights_of_one_rank_with_twice_the_meta_batch(two_ranks):
    single = meta_train(_family(), _config(meta_batch_size=2 * SHARE))
    assert single.skipped_nonfinite == 1  # the poisoned task is in this meta-batch too
    for rank in two_ranks:
        assert rank["skipped"] == 1  # rank 1's NaN skipped the step on rank 0 as well
        for name, value in single.net.state_dict().items():
            assert torch.allclose(rank["weights"][name], value, rtol=1e-5, atol=1e-6), name
    for name, value in two_ranks[0]["weights"].items():
        assert torch.equal(value, two_ranks[1]["weights"][name]), name  # the same bits on every rank
    assert json.dumps(two_ranks[0]["history"]) == json.dumps(two_ranks[1]["history"])  # NaN != NaN
    single_losses = [h["meta_loss"] for h in single.history if "meta_loss" in h]
    rank_losses = [h["meta_loss"] for h in two_ranks[0]["history"] if "meta_loss" in h]
    assert rank_losses == pytest.approx(single_losses, rel=1e-5, nan_ok=True)


def test_split_evaluation_gathers_the_single_process_report(two_ranks):
    from l2l_plugin.evaluation import EvaluationReport

    net = meta_train(_family(), _config(meta_batch_size=2 * SHARE)).net
    single = evaluate(net, _family(), "quadratic", _config().evaluation, 10)
    for rank in two_ranks:
        report = EvaluationReport.model_validate_json(rank["report"])
        assert report.test_seeds == single.test_seeds
        for name, result in single.optimizers.items():
            assert report.optimizers[name].lr == result.lr, name  # tuned on gathered scores
            assert report.optimizers[name].final_loss_mean == pytest.approx(result.final_loss_mean, rel=1e-4)


def test_rank_zeros_time_budget_stops_every_rank_at_the_same_iteration(two_ranks):
    (first, reason), (second, other_reason) = (rank["budget"] for rank in two_ranks)
    assert reason == other_reason == "time budget"
    assert first == second and 0 < first < 100_000


def test_shards_cover_the_items_in_order():
    items = list(range(7))
    shares = [shard(items, Ranks(rank, 3)) for rank in range(3)]
    assert shares == [[0, 1, 2], [3, 4], [5, 6]]
    assert shard_bounds(1, Ranks(1, 2)) == (1, 1)  # fewer items than ranks: an empty share


def test_a_checkpoint_of_another_number_of_ranks_is_another_run():
    from l2l_plugin.training.run_state import RunState

    def identity(ranks: Ranks) -> str:
        return RunState(_family(), _config(), torch.device("cpu"), ranks).identity()

    assert identity(Ranks(0, 2)) == identity(Ranks(1, 2))  # every rank of a run agrees
    assert identity(Ranks(0, 2)) != identity(Ranks())
    assert "ranks" not in identity(Ranks())  # single-process checkpoints keep their identity


def test_launch_options_that_cannot_work_are_refused():
    from argparse import Namespace

    options = {"nproc": 2, "nnodes": "2", "max_restarts": 0, "rdzv_endpoint": None, "rdzv_id": "l2l"}
    with pytest.raises(LaunchError, match="--rdzv-endpoint"):
        torchrun_arguments(Namespace(**options))
    with pytest.raises(LaunchError, match="--nproc"):
        torchrun_arguments(Namespace(**{**options, "nnodes": "1", "nproc": 0}))
    multi = torchrun_arguments(Namespace(**{**options, "rdzv_endpoint": "head:29400"}))
    assert "--rdzv-endpoint=head:29400" in multi and "--standalone" not in multi


def test_a_recipe_search_on_ranks_is_refused_with_the_way_out(capsys, tmp_path):
    from l2l_plugin.cli import main

    assert main(["meta-train", "quadratic", "--out", str(tmp_path), "--search", "trials=2", "--nproc", "2"]) == 2
    assert "--search runs its trials in one process" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing launched, nothing written


def _cli_meta(iterations: int, checkpoint_every: int) -> list[str]:
    meta = {**META, "meta_iterations": iterations, "checkpoint_every": checkpoint_every}
    return [arg for key, value in meta.items() for arg in ("--meta", f"{key}={json.dumps(value)}")]


def _rank_pids(launcher: int) -> dict[int, int]:
    """{rank: pid} of the ranks torchrun started under ``launcher`` (from /proc)."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        rank = [item[5:] for item in environ if item.startswith(b"RANK=")]
        if parent == launcher and rank:
            ranks[int(rank[0])] = int(entry.name)
    return ranks


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks through /proc")
def test_a_rank_killed_mid_run_restarts_the_group_from_the_checkpoint(tmp_path):
    iterations, every = 150, 10
    command = [
        str(VENV_BIN / "l2l"), "meta-train", "quadratic", "--set", "dim=4", "--out", str(tmp_path),
        "--nproc", "2", "--max-restarts", "1", *_cli_meta(iterations, every),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    launcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "checkpoint" / CHECKPOINT_NAME
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    victim = _rank_pids(launcher.pid).get(1)
    assert victim is not None and launcher.poll() is None, "the run ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)
    killed_at = torch.load(checkpoint, weights_only=True)["counters"][0]
    stdout, stderr = launcher.communicate(timeout=180)

    assert launcher.returncode == 0, stderr[-3000:]
    assert 0 < killed_at < iterations
    assert "resumed from the checkpoint at meta-iteration" in stderr, stderr[-3000:]
    trained = load_trained_optimizer(tmp_path / "optimizer")
    assert trained.manifest.provenance.meta_iterations == iterations
    assert "stop reason: completed" in stdout
    # Uninterrupted, 1 rank with the whole meta-batch: the same run, within fp32 tolerance.
    family = QuadraticFamily(dim=4)
    overrides = {**META, "meta_iterations": iterations, "meta_batch_size": 2 * SHARE}
    reference = meta_train(family, resolve_meta_train_config(family, overrides))
    for name, value in reference.net.state_dict().items():
        assert torch.allclose(trained.net.state_dict()[name], value, rtol=1e-4, atol=1e-5), name


def test_plain_torchrun_runs_the_cli_and_only_rank_zero_writes(tmp_path):
    out = tmp_path / "run"
    command = [
        str(VENV_BIN / "torchrun"), "--standalone", "--nproc-per-node", "2",
        "-m", "l2l_plugin.cli", "meta-train", "quadratic", "--set", "dim=4", "--out", str(out), "--quiet",
        *_cli_meta(4, 2),
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("stop reason: completed") == 1  # one report, from rank 0
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint", "evaluation.json", "history.json", "loss_curves.png", "optimizer",
    ]  # fmt: skip


# -- the service: a job asks for ranks; the worker is rank 0, progress and cancel work as for one --


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("fastapi")
    from test_api_support import TOKEN, api_client, auth, isolated_mlflow, wait_for

    root = tmp_path_factory.mktemp("api-ranks")
    with isolated_mlflow(root / "mlflow"), api_client(root / "data", workers=1, token=TOKEN, max_ranks=2) as client:
        wait_for(lambda: client.get("/health", headers=auth()).json(), lambda h: h["workers"]["alive"] == 1, 60)
        yield client, root / "data"


def _submit(client: Any, **changes: Any) -> dict[str, Any]:
    from test_api_support import auth, tiny_request

    response = client.post("/meta-train", json=tiny_request(**changes), headers=auth())
    assert response.status_code == 202, response.text
    return response.json()


def _job_when(client: Any, job_id: str, done: Any, timeout: float = 180) -> dict[str, Any]:
    from test_api_support import wait_for

    return wait_for(lambda: client.get(f"/jobs/{job_id}").json(), done, timeout)


def test_a_service_job_on_two_ranks_registers_what_rank_zero_trained(service):
    from test_api_support import TERMINAL

    client, data_dir = service
    job = _submit(client, ranks=2)
    assert job["ranks"] == 2
    done = _job_when(client, job["id"], lambda j: j["state"] in TERMINAL)
    assert done["state"] == "succeeded", done
    assert done["result"]["model_version"] is not None and done["progress"]["iterations_done"] == 6
    assert not _ranks_of(data_dir / "api" / "jobs" / job["id"])  # every child rank is gone


def test_cancelling_a_two_rank_job_stops_every_rank(service):
    from test_api_support import TERMINAL, auth

    client, data_dir = service
    overrides = {"meta_iterations": 5000, "checkpoint_every": 50, "validation_every": 1000, "max_seconds": 300}
    job = _submit(client, register=False, ranks=2, meta_overrides={**_tiny_meta(), **overrides})
    _job_when(client, job["id"], lambda j: j["progress"]["iterations_done"] > 0)
    assert len(_ranks_of(data_dir / "api" / "jobs" / job["id"])) == 1  # rank 1 runs beside the worker
    assert client.delete(f"/jobs/{job['id']}", headers=auth()).status_code == 202
    done = _job_when(client, job["id"], lambda j: j["state"] in TERMINAL, 60)
    assert done["state"] == "cancelled" and done["stop_reason"] == "cancelled", done
    assert done["progress"]["iterations_done"] < 5000
    assert not _ranks_of(data_dir / "api" / "jobs" / job["id"])


def test_a_job_asking_for_more_ranks_than_the_service_allows_is_refused(service):
    from test_api_support import auth, tiny_request

    client, _ = service
    response = client.post("/meta-train", json=tiny_request(ranks=3), headers=auth())
    assert response.status_code == 422
    assert any(error["loc"][-1] == "ranks" and "at most 2" in error["msg"] for error in response.json()["detail"])


def _tiny_meta() -> dict[str, Any]:
    from test_api_support import tiny_request

    return tiny_request()["meta_overrides"]


def _ranks_of(out_dir: Path) -> list[int]:
    """Pids of live `l2l_plugin.cli meta-train` rank processes writing to ``out_dir``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"l2l_plugin.cli" in cmdline and str(out_dir).encode() in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids
