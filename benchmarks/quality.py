"""Meta-train and evaluate one recipe on one family; print the figures BENCHMARKS.md records.

    python benchmarks/quality.py mnist_mlp --meta max_seconds=1500 --out /tmp/q/mnist
    python benchmarks/quality.py mnist_mlp --no-family-defaults --out /tmp/q/mnist_bare
    python benchmarks/quality.py teacher_mlp --out /tmp/q/teacher    # benchmarks/families/, no defaults
    python benchmarks/quality.py mnist_mlp --variant "200 steps" steps=200 --variant relu activation=relu ...

Without --no-family-defaults a family gets its own ``meta_train_defaults`` (on the preset they
name); with it, the library default recipe (``l2l`` preset) alone, as a family nobody tuned
would. Each --variant re-evaluates the same trained optimizer on another family config (and
step count) with the baselines re-tuned there. Writes what ``l2l meta-train`` writes (optimizer/,
evaluation.json, history.json), one folder per variant and ``summary.json`` under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from l2l_plugin.cli import parse_assignments
from l2l_plugin.evaluation import LEARNED, EvaluationReport
from l2l_plugin.families import TaskFamily, make_family
from l2l_plugin.pipeline import evaluate_trained, meta_train_and_evaluate, write_evaluation
from l2l_plugin.training import MetaTrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from families.teacher_mlp import TeacherMlpFamily  # noqa: E402
from machine import machine_info  # noqa: E402

BENCHMARK_FAMILIES: dict[str, type[TaskFamily]] = {"teacher_mlp": TeacherMlpFamily}


def benchmark_family(name: str, fields: dict) -> TaskFamily:
    return BENCHMARK_FAMILIES[name].model_validate(fields) if name in BENCHMARK_FAMILIES else make_family(name, fields)


def report_row(label: str, report: EvaluationReport) -> dict:
    best = report.optimizers[report.best_baseline]
    learned = report.optimizers[LEARNED]
    return {
        "variant": label,
        "steps": report.steps,
        "family_config": report.family_config,
        "learned_mean": learned.final_loss_mean,
        "learned_geomean": learned.final_loss_geomean,
        "best_baseline": report.best_baseline,
        "best_baseline_lr": best.lr,
        "baseline_mean": best.final_loss_mean,
        "baseline_geomean": best.final_loss_geomean,
        "ratio_mean": report.ratio_to_best_baseline("final_loss_mean"),
        "ratio_geomean": report.ratio_to_best_baseline("final_loss_geomean"),
        "win_rate": report.win_rate_vs_best_baseline,
        "beats_every_baseline": report.beats_every_baseline,
        "lr_at_grid_edge": {n: r.lr_at_grid_edge for n, r in report.optimizers.items() if n != LEARNED},
        "all": {n: (r.final_loss_mean, r.final_loss_geomean, r.lr) for n, r in report.optimizers.items()},
    }


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """The family, its config and the meta-training overrides (shared with benchmarks/search.py)."""
    parser.add_argument("family")
    parser.add_argument("--set", action="append", default=[], help="family config field KEY=VALUE")
    parser.add_argument("--meta", action="append", default=[], help="meta-training override KEY=VALUE")
    parser.add_argument("--no-family-defaults", action="store_true", help="ignore the family's meta_train_defaults")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(parser)
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="LABEL [KEY=VALUE ...]")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    # The pipeline of `l2l meta-train`, given the family itself: benchmark families are not plugins.
    family = benchmark_family(args.family, parse_assignments(args.set))
    outcome = meta_train_and_evaluate(
        args.family, family, parse_assignments(args.meta), args.out, family_defaults=not args.no_family_defaults
    )
    config = MetaTrainConfig.model_validate(outcome.trained.manifest.meta_training)  # as trained
    provenance = outcome.trained.manifest.provenance
    rows = [report_row("trained config", outcome.report)]
    for label, *assignments in args.variant:
        fields = parse_assignments(assignments)
        steps = fields.pop("steps", None)  # None: the trained config's evaluation steps
        variant_family = benchmark_family(args.family, {**family.model_dump(mode="json"), **fields})
        report = evaluate_trained(outcome.optimizer_dir, args.family, variant_family, steps=steps, device=config.device)
        write_evaluation(report, args.out / label.replace(" ", "_"))
        rows.append(report_row(label, report))
    summary = {
        "command": " ".join(sys.argv), "machine": machine_info(), "preset": config.preset,
        "meta_train_seconds": provenance.meta_train_seconds, "meta_iterations": provenance.meta_iterations,
        "best_iteration": provenance.best_iteration, "torch_threads": torch.get_num_threads(), "rows": rows,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n`python {summary['command']}` — {summary['machine']}")
    print(f"preset {config.preset}: {provenance.meta_iterations} meta-iterations in {provenance.meta_train_seconds:.0f} s "
          f"(best at {provenance.best_iteration})\n")
    print("| variant | steps | learned mean / geomean | best baseline (lr) mean / geomean | ratio mean / geomean | win-rate | beats all |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['steps']} | {r['learned_mean']:.4g} / {r['learned_geomean']:.4g} "
              f"| {r['best_baseline']} ({r['best_baseline_lr']:.3g}) {r['baseline_mean']:.4g} / {r['baseline_geomean']:.4g} "
              f"| {r['ratio_mean']:.2f}× / {r['ratio_geomean']:.2f}× | {r['win_rate']:.0%} | {r['beats_every_baseline']} |")


if __name__ == "__main__":
    main()
