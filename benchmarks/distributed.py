"""Data-parallel meta-training throughput: 2 ranks × 1 thread against 1 rank (issue 11).

    python benchmarks/distributed.py mnist_mlp --iterations 6 --rounds 2 \
        --out benchmarks/results/distributed_mnist_mlp.json

Three runs per round, alternating so a shared machine's load falls on all of them alike, each
in fresh processes with one intra-op thread per rank (gloo on 127.0.0.1):

- ``1 rank × b``   : the single-process baseline at the per-rank meta-batch b;
- ``2 ranks × b``  : the same per-rank meta-batch on two ranks (twice the tasks per step);
- ``1 rank × 2b``  : the single process doing what the 2 ranks do (the same weights);
- ``2 alone × b``  : a control, two independent single-process runs at once (no group): what the
  machine gives two processes without any synchronisation (on a loaded machine, less than 2×).

``--own-sessions`` starts every process in a session of its own. Linux's autogroup scheduling
(``/proc/sys/kernel/sched_autogroup_enabled``) shares the CPU between sessions first: ranks
launched together (torchrun, this script) split one session's share, so on a machine that
other sessions keep busy two ranks get no more CPU than one process. A session each gives
every process the share an unshared machine would.

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


def _train(family_name: str, overrides: dict[str, Any]) -> list[list[float]]:
    """Meta-train; (wall clock, this process's CPU time) at the end of every meta-iteration."""
    from l2l_plugin import make_family
    from l2l_plugin.pipeline import resolve_meta_train_config
    from l2l_plugin.training import MetaTrainCallback, meta_train

    class Clock(MetaTrainCallback):
        def __init__(self) -> None:
            self.times: list[list[float]] = []

        def on_iteration(self, progress: Any) -> None:
            self.times.append([time.perf_counter(), time.process_time()])

    torch.set_num_threads(1)
    family = make_family(family_name, {})
    clock = Clock()
    meta_train(family, resolve_meta_train_config(family, overrides), callbacks=[clock])
    return clock.times


def _rank(
    rank: int, world_size: int, port: int, family_name: str, overrides: dict[str, Any], out: str, own_session: bool
) -> None:
    from l2l_plugin.training.distributed import process_group

    if own_session:
        os.setsid()

    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False)
    with process_group(store, rank, world_size):
        times = _train(family_name, overrides)
    if rank == 0:
        Path(out).write_text(json.dumps(times))


def _alone(index: int, family_name: str, overrides: dict[str, Any], out: str, own_session: bool) -> None:
    if own_session:
        os.setsid()
    Path(f"{out}.{index}").write_text(json.dumps(_train(family_name, overrides)))


def _rate(times: list[list[float]]) -> float:
    return (len(times) - 1) / (times[-1][0] - times[0][0])


def _cpu_seconds(times: list[list[float]]) -> float:
    """CPU seconds per meta-iteration: what the process computed, whatever the machine's load."""
    return (times[-1][1] - times[0][1]) / (len(times) - 1)


def run(
    family: str, world_size: int, meta_batch: int, iterations: int, alone: bool = False, own_session: bool = False
) -> dict[str, Any]:
    """One layout in fresh processes: ``world_size`` ranks of one group, or (``alone``) as many
    independent single-process runs at once."""
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
        if alone:
            mp.spawn(_alone, args=(family, overrides, out, own_session), nprocs=world_size, join=True)
            clocks = [json.loads(Path(f"{out}.{k}").read_text()) for k in range(world_size)]
            rates = [_rate(clock) for clock in clocks]
            per_second, tasks = statistics.mean(rates), sum(rates) * meta_batch
            cpu = statistics.mean(_cpu_seconds(clock) for clock in clocks)
        else:
            store = dist.TCPStore("127.0.0.1", 0, None, is_master=True, wait_for_workers=False)
            mp.spawn(_rank, args=(world_size, store.port, family, overrides, out, own_session), nprocs=world_size, join=True)
            clock = json.loads(Path(out).read_text())
            per_second, cpu = _rate(clock), _cpu_seconds(clock)
            tasks = per_second * world_size * meta_batch
    return {
        "ranks": 1 if alone else world_size,
        "processes": world_size,
        "meta_batch_per_rank": meta_batch,
        "meta_iterations_per_second": per_second,  # alone: the mean of the processes
        "tasks_per_second": tasks,
        "cpu_seconds_per_meta_iteration": cpu,  # rank 0's (alone: the processes' mean)
        "timed_iterations": iterations - 1,
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
    parser.add_argument("--own-sessions", action="store_true", help="every process in a session of its own")
    parser.add_argument("--no-control", dest="control", action="store_false", help="skip the '2 alone' control")
    args = parser.parse_args()
    b = args.meta_batch
    layouts = {"1 rank x b": (1, b, False), "2 ranks x b": (2, b, False), "1 rank x 2b": (1, 2 * b, False)}
    if args.control:
        layouts["2 alone x b"] = (2, b, True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in layouts}
    for round_ in range(args.rounds):
        for name, (processes, batch, alone) in layouts.items():
            result = run(args.family, processes, batch, args.iterations, alone, args.own_sessions)
            runs[name].append(result)
            print(f"round {round_ + 1} {name}: {result['meta_iterations_per_second']:.3f} it/s, "
                  f"{result['tasks_per_second']:.3f} tasks/s, {result['cpu_seconds_per_meta_iteration']:.2f} CPU s/it, "
                  f"load {result['load_average_before'][0]:.2f}", flush=True)
    median = {
        name: {key: statistics.median(r[key] for r in results) for key in ("meta_iterations_per_second", "tasks_per_second", "cpu_seconds_per_meta_iteration")}
        for name, results in runs.items()
    }
    summary = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "family": args.family,
        "own_sessions": args.own_sessions,
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
    if args.control:
        summary["tasks_per_second_2_alone_over_1_rank"] = (
            median["2 alone x b"]["tasks_per_second"] / median["1 rank x b"]["tasks_per_second"]
        )
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
