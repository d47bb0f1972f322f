"""Per-step cost of LearnedOptimizer.step against torch.optim.Adam at 10^4, 10^5, 10^6 parameters.

    python benchmarks/step_cost.py

Adam is timed with each of its implementations (for-loop, foreach, fused) and the fastest is
the reference; both optimizers step the same parameters with the same gradients, measured in
one run with torch.utils.benchmark (repeated, median), so the ratio survives a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils import benchmark

from l2l_plugin import LearnedOptimizer
from l2l_plugin.artifacts import OptimizerManifest, Provenance, TrainedOptimizer
from l2l_plugin.optimizer import LSTMOptimizerNet, OptimizerNetConfig
from l2l_plugin.training.presets import PRESETS

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402


def _params(total: int) -> list[torch.Tensor]:
    # A model-like split: one big matrix and a few small tensors.
    sizes = [total - 3 * 100, 100, 100, 100]
    params = [torch.zeros(n, requires_grad=True) for n in sizes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    return params


def _median_ms(stmt, min_run_time: float) -> float:
    timer = benchmark.Timer(stmt="stmt()", globals={"stmt": stmt})
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10**4, 10**5, 10**6])
    parser.add_argument("--min-run-time", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both optimizers")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper", help="the recipe whose network is timed")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # paper: 2 layers of 20 on log/sign input; l2l: the same LSTM with moment inputs and the nominal step.
    config = OptimizerNetConfig.model_validate(PRESETS[args.preset].get("network", {}))
    manifest = OptimizerManifest(
        network=config, family="none", family_config={}, meta_training={}, provenance=Provenance(library_version="bench")
    )
    trained = TrainedOptimizer(manifest, LSTMOptimizerNet(config))
    rows = []
    for size in args.sizes:
        params = _params(size)
        adam_ms = {}
        for variant in ("foreach", "fused", "for-loop"):
            kwargs = {"foreach": variant == "foreach", "fused": variant == "fused"} if variant != "for-loop" else {"foreach": False}
            adam = torch.optim.Adam(params, lr=1e-3, **kwargs)
            adam_ms[variant] = _median_ms(adam.step, args.min_run_time)
        learned = LearnedOptimizer(params, trained)
        learned.step()  # allocate the LSTM state outside the timing
        learned_ms = _median_ms(learned.step, args.min_run_time)
        best = min(adam_ms, key=adam_ms.get)
        rows.append({"parameters": size, "learned_ms": learned_ms, "adam_ms": adam_ms, "fastest_adam": best,
                     "ratio": learned_ms / adam_ms[best]})

    summary = {"command": " ".join(sys.argv), "machine": machine_info(), "preset": args.preset, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    print(f"`python {summary['command']}` — {summary['machine']}\n")
    print("| parameters | LearnedOptimizer.step ms | Adam ms (fastest: variant) | ratio |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['parameters']:.0e} | {r['learned_ms']:.2f} | {r['adam_ms'][r['fastest_adam']]:.3f} "
              f"({r['fastest_adam']}) | {r['ratio']:.0f}× |")


if __name__ == "__main__":
    main()
