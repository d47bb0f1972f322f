"""A recipe search on one family, then the winner trained, evaluated and put to the gate.

    python benchmarks/search.py mnist_mlp --no-family-defaults --trials 6 --budget 720 --final-seconds 600 --out /tmp/s/mnist
    python benchmarks/search.py teacher_mlp --trials 6 --budget 600 --final-seconds 600 --out /tmp/s/teacher
    python benchmarks/search.py quadratic --trials 8 --budget 240 --final-seconds 120 --compare-defaults --out /tmp/s/quad

The search is ``l2l_registry.search.RecipeSearch`` (the same study ``l2l meta-train --search``
runs), on a family instance so the throwaway ``benchmarks/families`` work too. The gate's
verdict is ``l2l_registry.gate.decide`` against an empty registry (no champion yet), i.e. "beats
every tuned baseline on the held-out tasks". ``--compare-defaults`` also trains the default
recipe for the search's whole wall-clock time (search + final training) and evaluates it on the
same held-out tasks: searched vs defaults at equal total budget. Writes ``summary.json`` under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from l2l_plugin.cli import parse_assignments
from l2l_plugin.evaluation import EvaluationReport, evaluate
from l2l_plugin.families import TaskFamily
from l2l_plugin.training import MetaTrainConfig, cpu_threads, meta_train, resolve_device
from l2l_plugin.training.presets import deep_merge
from l2l_registry.gate import decide
from l2l_registry.search import RecipeSearch, SearchSpec, sqlite_storage
from l2l_registry.search.tracking import EchoObserver

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402
from quality import add_recipe_arguments, benchmark_family, report_row  # noqa: E402


def _train_and_evaluate(family: TaskFamily, name: str, config: MetaTrainConfig, out: Path) -> tuple[dict[str, Any], EvaluationReport]:
    started = time.monotonic()
    result = meta_train(family, config, checkpoint_dir=out / "checkpoint")
    config = result.config or config
    with cpu_threads(config.cpu_threads):
        report = evaluate(result.net, family, name, config.evaluation, config.evaluation_steps, resolve_device(config.device))
    decision = decide(report, None)
    row = {
        **report_row(config.preset, report),
        "preset": config.preset,
        "meta_train_seconds": result.wall_seconds,
        "meta_iterations": result.iterations,
        "best_iteration": result.best_iteration,
        "wall_seconds": time.monotonic() - started,
        "promoted": decision.promote,
        "gate_reason": decision.reason,
    }
    return row, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--budget", type=float, default=600, help="seconds for all trials")
    parser.add_argument("--trial-seconds", type=float, help="meta-training seconds per trial (default budget/trials)")
    parser.add_argument("--pruner", default="median")
    parser.add_argument("--startup-trials", type=int, default=2, help="trials before pruning and TPE start")
    parser.add_argument("--metric", default="final_loss_mean")
    parser.add_argument("--final-seconds", type=float, required=True, help="max_seconds of the winner's training")
    parser.add_argument("--compare-defaults", action="store_true", help="also train the defaults for the whole time")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    torch.set_num_threads(1)
    family = benchmark_family(args.family, parse_assignments(args.set))
    defaults = {} if args.no_family_defaults else type(family).meta_train_defaults
    overrides = deep_merge(parse_assignments(args.meta), {"max_seconds": args.final_seconds})
    spec = SearchSpec(
        trials=args.trials, budget=args.budget, trial_seconds=args.trial_seconds, pruner=args.pruner,
        metric=args.metric, startup_trials=args.startup_trials,
    )
    search = RecipeSearch(
        family, overrides, spec, storage=sqlite_storage(args.out), study_name=f"bench-{args.family}",
        family_defaults=defaults, hints={}, observer=EchoObserver(),
    )
    started = time.monotonic()
    outcome = search.run()
    search_seconds = time.monotonic() - started
    print(outcome.message(), flush=True)
    final, _ = _train_and_evaluate(family, args.family, search.final_config(outcome), args.out / "final")
    total_seconds = time.monotonic() - started
    rows = {"searched": final}
    if args.compare_defaults:
        # The defaults get the whole wall-clock time the search and the winner's training took.
        equal = search.config_for(deep_merge(overrides, {"max_seconds": search_seconds + final["meta_train_seconds"]}))
        rows["defaults, equal total budget"], _ = _train_and_evaluate(family, args.family, equal, args.out / "defaults")
    summary = {
        "command": "python " + " ".join(sys.argv),
        "machine": machine_info(),
        "search": outcome.as_dict(),
        "trials": [t.__dict__ for t in outcome.trials],
        "search_seconds": search_seconds,
        "total_seconds": total_seconds,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    print(f"\n`{summary['command']}` — {summary['machine']}")
    print(f"search {search_seconds:.0f} s, search + winner's training + evaluation {total_seconds:.0f} s\n")
    print("| trial | state | validation score | recipe |")
    print("|---|---|---|---|")
    for t in outcome.trials:
        value = "-" if t.value is None else f"{t.value:.4g}"
        print(f"| {t.number} | {t.state.lower()} | {value} | {'defaults' if t.defaults else json.dumps(t.labels)} |")
    print("\n| run | preset | meta-iterations (s) | learned / best baseline mean (ratio) | geomean ratio | win-rate | promoted |")
    print("|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(
            f"| {label} | {r['preset']} | {r['meta_iterations']} ({r['meta_train_seconds']:.0f}) "
            f"| {r['learned_mean']:.4g} / {r['best_baseline']} {r['baseline_mean']:.4g} ({r['ratio_mean']:.2f}×) "
            f"| {r['ratio_geomean']:.2f}× | {r['win_rate']:.0%} | {r['promoted']} |"
        )


if __name__ == "__main__":
    main()
