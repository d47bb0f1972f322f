"""Meta-train a family with its default config on several seeds; compare with tuned baselines.

    python benchmarks/meta_train_family.py quadratic --seeds 0 1 2 --out benchmarks/results/quadratic

Prints a Markdown table (pasted into BENCHMARKS.md) and writes ``summary.json`` under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from l2l_plugin.cli import parse_assignments
from l2l_plugin.evaluation import LEARNED
from l2l_plugin.pipeline import meta_train_and_evaluate

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", action="append", default=[], help="family config field KEY=VALUE")
    parser.add_argument("--meta", action="append", default=[], help="meta-training override KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    rows = []
    for seed in args.seeds:
        overrides = {**parse_assignments(args.meta), "seed": seed}
        outcome = meta_train_and_evaluate(args.family, parse_assignments(args.set), overrides, args.out / f"seed{seed}")
        report, provenance = outcome.report, outcome.trained.manifest.provenance
        best = report.optimizers[report.best_baseline]
        learned = report.optimizers[LEARNED]
        rows.append(
            {
                "seed": seed,
                "meta_train_seconds": provenance.meta_train_seconds,
                "meta_iterations": provenance.meta_iterations,
                "best_iteration": provenance.best_iteration,
                "best_baseline": report.best_baseline,
                "best_baseline_lr": best.lr,
                "learned_mean": learned.final_loss_mean,
                "baseline_mean": best.final_loss_mean,
                "ratio_mean": report.ratio_to_best_baseline("final_loss_mean"),
                "learned_geomean": learned.final_loss_geomean,
                "baseline_geomean": best.final_loss_geomean,
                "ratio_geomean": report.ratio_to_best_baseline("final_loss_geomean"),
                "learned_median": learned.final_loss_median,
                "baseline_median": best.final_loss_median,
                "win_rate": report.win_rate_vs_best_baseline,
                "beats_every_baseline": report.beats_every_baseline,
                "all": {name: (r.final_loss_mean, r.final_loss_geomean, r.lr) for name, r in report.optimizers.items()},
            }
        )
    summary = {"command": " ".join(sys.argv), "machine": machine_info(), "runs": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))

    print(f"\n`{summary['command']}` — {summary['machine']}\n")
    print("| seed | meta-train s | iters (best) | best baseline (lr) | mean: learned / baseline (ratio) "
          "| geomean: learned / baseline (ratio) | median: learned / baseline | win-rate |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['seed']} | {r['meta_train_seconds']:.0f} | {r['meta_iterations']} ({r['best_iteration']}) "
            f"| {r['best_baseline']} ({r['best_baseline_lr']:.3g}) "
            f"| {r['learned_mean']:.4g} / {r['baseline_mean']:.4g} ({r['ratio_mean']:.2f}×) "
            f"| {r['learned_geomean']:.3g} / {r['baseline_geomean']:.3g} ({r['ratio_geomean']:.2f}×) "
            f"| {r['learned_median']:.3g} / {r['baseline_median']:.3g} | {r['win_rate']:.0%} |"
        )


if __name__ == "__main__":
    main()
