"""Data-parallel meta-training throughput: 2 ranks × 1 thread against 1 rank (issue 11).

    python benchmarks/distributed.py mnist_mlp --iterations 6 --rounds 2 \
        --out benchmarks/results/distributed_mnist_mlp.json

Three runs per round, alternating so a shared machine's load falls on all of them alike, each
in fresh processes with one intra-op thread per rank (gloo on 127.0.0.1):

- ``1 rank × b``   : the single-process baseline at the per-rank meta-batch b;
- ``2 ranks × b``  : the same per-rank meta-batch on two ranks (twice the tasks per step);
- ``1 rank × 2b``  : the single process doing what the 2 ranks do (the same weights).

Timed: rank 0's meta-iterations after the first (the first carries start-up and the initial
validation), with validation pushed past the run, so the figure is meta-gradient steps only.
Reported per run: meta-iterations/s and tasks/s (meta-iterations × global meta-batch), and the
ratios ``2 ranks × b`` / ``1 rank × b`` (tasks/s, the per-rank meta-batch held) and
``2 ranks × b`` / ``1 rank × 2b`` (meta-iterations/s, the same training).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402


def _rank(rank: int, world_size: int, port: int, family_name: str, overrides: dict[str, Any], out: str) -> None:
    from l2l_plugin import make_family
    from l2l_plugin.pipeline import resolve_meta_train_config
    from l2l_plugin.training import MetaTrainCallback, meta_train
    from l2l_plugin.training.distributed import process_group

    class Clock(MetaTrainCallback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_iteration(self, progress: Any) -> None:
            self.times.append(time.perf_counter())

    torch.set_num_threads(1)
    family = make_family(family_name, {})
    config = resolve_meta_train_config(family, overrides)
    clock = Clock()
    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False)
    with process_group(store, rank, world_size):
        meta_train(family, config, callbacks=[clock])
    if rank == 0:
        Path(out).write_text(json.dumps(clock.times))


def run(family: str, world_size: int, meta_batch: int, iterations: int) -> dict[str, Any]:
    overrides = {
        "meta_batch_size": meta_batch,
        "meta_iterations": iterations,
        "max_seconds": None,
        "warm_start": "none",  # a one-off tuning before training: not what is measured
        "validation_every": 10 * iterations,
        "validation_tasks": 1,
        "cpu_threads": 1,
    }
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "times.json")
        store = dist.TCPStore("127.0.0.1", 0, None, is_master=True, wait_for_workers=False)
        mp.spawn(_rank, args=(world_size, store.port, family, overrides, out), nprocs=world_size, join=True)
        times = json.loads(Path(out).read_text())
    per_second = (len(times) - 1) / (times[-1] - times[0])
    return {
        "ranks": world_size,
        "meta_batch_per_rank": meta_batch,
        "meta_iterations_per_second": per_second,
        "tasks_per_second": per_second * world_size * meta_batch,
        "timed_iterations": len(times) - 1,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", nargs="?", default="mnist_mlp")
    parser.add_argument("--meta-batch", type=int, default=1, help="b, the per-rank meta-batch")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    b = args.meta_batch
    layouts = {"1 rank x b": (1, b), "2 ranks x b": (2, b), "1 rank x 2b": (1, 2 * b)}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in layouts}
    for round_ in range(args.rounds):
        for name, (ranks, batch) in layouts.items():
            result = run(args.family, ranks, batch, args.iterations)
            runs[name].append(result)
            print(f"round {round_ + 1} {name}: {result['meta_iterations_per_second']:.3f} it/s, "
                  f"{result['tasks_per_second']:.3f} tasks/s, load {result['load_average_before'][0]:.2f}", flush=True)
    median = {
        name: {key: statistics.median(r[key] for r in results) for key in ("meta_iterations_per_second", "tasks_per_second")}
        for name, results in runs.items()
    }
    summary = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "family": args.family,
        "meta_batch_per_rank": b,
        "median": median,
        "tasks_per_second_2_ranks_over_1_rank_same_per_rank_batch": median["2 ranks x b"]["tasks_per_second"]
        / median["1 rank x b"]["tasks_per_second"],
        "meta_iterations_per_second_2_ranks_over_1_rank_same_global_batch": median["2 ranks x b"][
            "meta_iterations_per_second"
        ]
        / median["1 rank x 2b"]["meta_iterations_per_second"],
        "meta_iterations_per_second_2_ranks_over_1_rank_same_per_rank_batch": median["2 ranks x b"][
            "meta_iterations_per_second"
        ]
        / median["1 rank x b"]["meta_iterations_per_second"],
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
