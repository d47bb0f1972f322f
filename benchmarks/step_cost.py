"""Per-step cost of LearnedOptimizer.step against torch.optim.Adam at 10^4, 10^5, 10^6 parameters.

    python benchmarks/step_cost.py --threads 1 2 --state-dtypes float32 bfloat16
    python benchmarks/step_cost.py --device cuda --sizes 1000000 100000000

Adam is timed with each of its implementations (for-loop, foreach, fused) and the fastest is
the reference; every optimizer steps the same parameters with the same gradients, and their
steps are interleaved (one of each per round, median over the rounds), so a load that comes and
goes on a shared machine slows them alike and the ratio survives it. Every (threads, state
dtype) pair is timed in the same process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from l2l_plugin import LearnedOptimizer
from l2l_plugin.artifacts import OptimizerManifest, Provenance, TrainedOptimizer
from l2l_plugin.optimizer import LSTMOptimizerNet, OptimizerNetConfig
from l2l_plugin.training.presets import PRESETS

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402


def _params(total: int, device: torch.device) -> list[torch.Tensor]:
    # A model-like split: one big matrix and a few small tensors.
    sizes = [total - 3 * 100, 100, 100, 100]
    params = [torch.zeros(n, requires_grad=True, device=device) for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    return params


def _interleaved_medians_ms(steps: dict[str, object], min_run_time: float, device: torch.device) -> dict[str, float]:
    """Median ms of each step, timed in rounds of one call each, for about ``min_run_time`` apiece."""
    def timed(step) -> float:
        started = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        timed(step)  # warm up (and allocate state) outside the timing
    began = time.perf_counter()
    while len(times[next(iter(steps))]) < 5 or time.perf_counter() - began < min_run_time * len(steps):
        for name, step in steps.items():
            times[name].append(timed(step))
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def _trained(preset: str, state_dtype: str) -> TrainedOptimizer:
    # paper: 2 layers of 20 on log/sign input; l2l: the same LSTM with moment inputs and the nominal step.
    config = OptimizerNetConfig.model_validate({**PRESETS[preset].get("network", {}), "state_dtype": state_dtype})
    manifest = OptimizerManifest(
        network=config, family="none", family_config={}, meta_training={}, provenance=Provenance(library_version="bench")
    )
    return TrainedOptimizer(manifest, LSTMOptimizerNet(config))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--min-run-time", type=float, default=2.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch intra-op threads (both optimizers)")
    parser.add_argument("--state-dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="the recipe whose network is timed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.sizes:
            params = _params(size, device)
            variants = ("foreach", "fused", "for-loop") if size <= 10**7 else ("foreach", "fused")
            steps = {}
            for variant in variants:
                kwargs = {"foreach": variant == "foreach", "fused": variant == "fused"} if variant != "for-loop" else {"foreach": False}
                steps[f"adam {variant}"] = torch.optim.Adam(params, lr=1e-3, **kwargs).step
            for state_dtype in args.state_dtypes:
                steps[state_dtype] = LearnedOptimizer(params, _trained(args.preset, state_dtype)).step
            medians = _interleaved_medians_ms(steps, args.min_run_time, device)
            adam_ms = {variant: medians[f"adam {variant}"] for variant in variants}
            best = min(adam_ms, key=adam_ms.get)
            for state_dtype in args.state_dtypes:
                rows.append({"threads": threads, "parameters": size, "state_dtype": state_dtype,
                             "learned_ms": medians[state_dtype], "adam_ms": adam_ms, "fastest_adam": best,
                             "ratio": medians[state_dtype] / adam_ms[best]})
            del params, steps

    machine = machine_info()
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    summary = {"command": " ".join(sys.argv), "machine": machine, "preset": args.preset, "device": str(device), "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    print(f"`python {summary['command']}` — {summary['machine']}\n")
    print("| threads | parameters | state | LearnedOptimizer.step ms | Adam ms (fastest: variant) | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['threads']} | {r['parameters']:.0e} | {r['state_dtype']} | {r['learned_ms']:.2f} | "
              f"{r['adam_ms'][r['fastest_adam']]:.3f} ({r['fastest_adam']}) | {r['ratio']:.0f}× |")


if __name__ == "__main__":
    main()
