"""Each lever of the l2l recipe switched off (or on) at equal budget, several seeds.

    python benchmarks/ablation.py teacher_mlp --seeds 0 1 --seconds 240 --out /tmp/ablation

Runs benchmarks/quality.py once per (variant, seed) with ``max_seconds`` as the equal budget,
the family's defaults ignored (the recipe alone), and prints one table row per variant: the
learned optimizer's mean and geometric-mean final loss as a ratio to the best tuned baseline
on the same held-out tasks, and its paired win-rate, per seed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

VARIANTS: dict[str, list[str]] = {
    "l2l (all levers)": [],
    "paper preset": ["preset=paper"],
    "− warm start (nominal lr 1e-3, learned)": ["warm_start=none"],
    "− final-loss objective (unrolls of 20, every step)": ["unroll_length=20", "final_loss_steps=null"],
    "− moment inputs (gradient only)": ["network.momentum_decays=[0.9]", "network.normalized_gradient=false"],
    "+ random scaling c=1": ["random_scaling=1.0"],
    "tanh-bounded update instead of nominal": ["network.update=tanh", "warm_start=none"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seconds", type=float, default=240)
    parser.add_argument("--meta", action="append", default=[], help="extra override for every variant")
    parser.add_argument("--only", nargs="*", help="variant labels to run (default: all)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    quality = Path(__file__).with_name("quality.py")
    rows = []
    for label, overrides in VARIANTS.items():
        if args.only and label not in args.only:
            continue
        per_seed = []
        for seed in args.seeds:
            out = args.out / f"{re.sub(r'[^a-z0-9]+', '_', label.lower()).strip('_')}_seed{seed}"
            meta = [*overrides, f"seed={seed}", f"max_seconds={args.seconds}", "meta_iterations=1000000", *args.meta]
            if not (out / "summary.json").exists():
                command = [sys.executable, str(quality), args.family, "--no-family-defaults", "--out", str(out)]
                for item in meta:
                    command += ["--meta", item]
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            summary = json.loads((out / "summary.json").read_text())
            row = summary["rows"][0]
            per_seed.append({"seed": seed, "iterations": summary["meta_iterations"], **{k: row[k] for k in (
                "ratio_mean", "ratio_geomean", "win_rate", "best_baseline", "beats_every_baseline")}})
        rows.append({"variant": label, "overrides": overrides, "seeds": per_seed})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablation.json").write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=2))
    print(f"\n`python {' '.join(sys.argv)}`\n")
    print("| variant | " + " | ".join(f"seed {s}: mean / geomean ratio, win-rate (iterations)" for s in args.seeds) + " |")
    print("|---|" + "---|" * len(args.seeds))
    for r in rows:
        cells = [f"{s['ratio_mean']:.3f}× / {s['ratio_geomean']:.3f}×, {s['win_rate']:.0%} ({s['iterations']})"
                 for s in r["seeds"]]
        print(f"| {r['variant']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
