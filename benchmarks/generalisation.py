"""Evaluate one trained optimizer on other configs of its family (the paper's section 3.2 tests).

    python benchmarks/generalisation.py runs/mnist/seed0/optimizer \
        --variant "200 steps" steps=200 --variant "40 hidden" hidden_sizes=[40] \
        --variant "2 layers" 'hidden_sizes=[20,20]' --variant relu activation=relu

Each --variant is a label followed by family fields (KEY=VALUE) and optionally steps=N.
Baselines are re-tuned on every variant; all optimizers see the same held-out instances.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from l2l_plugin.cli import parse_assignments
from l2l_plugin.evaluation import LEARNED
from l2l_plugin.pipeline import evaluate_trained, write_evaluation

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("optimizer_dir", type=Path)
    parser.add_argument("--variant", nargs="+", action="append", required=True, metavar="LABEL [KEY=VALUE ...]")
    parser.add_argument("--eval", action="append", default=[], help="evaluation config field KEY=VALUE")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    rows = []
    for label, *assignments in args.variant:
        fields = parse_assignments(assignments)
        steps = fields.pop("steps", None)
        report = evaluate_trained(args.optimizer_dir, None, fields or None, parse_assignments(args.eval), steps)
        if args.out:
            write_evaluation(report, args.out / label.replace(" ", "_"))
        adam = report.optimizers.get("adam")
        rows.append({
            "variant": label, "steps": report.steps, "family_config": report.family_config,
            "learned": report.optimizers[LEARNED].final_loss_mean,
            "learned_eval": report.optimizers[LEARNED].eval_loss_mean,
            "adam": adam.final_loss_mean if adam else None, "adam_lr": adam.lr if adam else None,
            "best_baseline": report.best_baseline,
            "best_baseline_loss": report.optimizers[report.best_baseline].final_loss_mean,
            "win_rate": report.win_rate_vs_best_baseline, "beats_every_baseline": report.beats_every_baseline,
        })
    summary = {"command": " ".join(sys.argv), "machine": machine_info(), "rows": rows}
    if args.out:
        (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n`python {summary['command']}` — {summary['machine']}\n")
    print("| variant | steps | learned final loss | tuned Adam (lr) | best baseline | win-rate vs best | beats all |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        adam = f"{r['adam']:.3f} ({r['adam_lr']:.3g})" if r["adam"] is not None else "-"
        print(f"| {r['variant']} | {r['steps']} | {r['learned']:.3f} | {adam} | {r['best_baseline']} "
              f"{r['best_baseline_loss']:.3f} | {r['win_rate']:.0%} | {r['beats_every_baseline']} |")


if __name__ == "__main__":
    main()
