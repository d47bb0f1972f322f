"""Meta-train and evaluate one recipe on one family; print the figures BENCHMARKS.md records.

    python benchmarks/quality.py mnist_mlp --meta max_seconds=1500 --out /tmp/q/mnist
    python benchmarks/quality.py mnist_mlp --no-family-defaults --out /tmp/q/mnist_bare
    python benchmarks/quality.py teacher_mlp --out /tmp/q/teacher    # benchmarks/families/, no defaults
    python benchmarks/quality.py mnist_mlp --variant "200 steps" steps=200 --variant relu activation=relu ...

Without --no-family-defaults a family gets its own ``meta_train_defaults`` (on the preset they
name); with it, the library default recipe (``l2l`` preset) alone, as a family nobody tuned
would. Each --variant re-evaluates the same trained optimizer on another family config (and
step count) with the baselines re-tuned there. Writes ``summary.json`` under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from l2l_plugin.artifacts import OptimizerManifest, Provenance, TrainedOptimizer, save_trained_optimizer
from l2l_plugin.cli import parse_assignments
from l2l_plugin.evaluation import LEARNED, EvaluationReport, evaluate
from l2l_plugin.families import TaskFamily, make_family
from l2l_plugin.pipeline import write_evaluation
from l2l_plugin.training import MetaTrainConfig, cpu_threads, meta_train, resolve_device
from l2l_plugin.training.presets import meta_train_recipe

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family")
    parser.add_argument("--set", action="append", default=[], help="family config field KEY=VALUE")
    parser.add_argument("--meta", action="append", default=[], help="meta-training override KEY=VALUE")
    parser.add_argument("--no-family-defaults", action="store_true", help="ignore the family's meta_train_defaults")
    parser.add_argument("--variant", nargs="+", action="append", default=[], metavar="LABEL [KEY=VALUE ...]")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    family = benchmark_family(args.family, parse_assignments(args.set))
    defaults = {} if args.no_family_defaults else type(family).meta_train_defaults
    config = MetaTrainConfig.model_validate(meta_train_recipe(defaults, parse_assignments(args.meta)))
    device = resolve_device(config.device)
    result = meta_train(family, config, checkpoint_dir=args.out / "checkpoint")
    config = result.config or config  # as trained (warm_start 'tuned_nominal' picks the direction)
    manifest = OptimizerManifest(
        network=config.network, family=args.family, family_config=family.model_dump(mode="json"),
        meta_training=config.model_dump(mode="json"),
        provenance=Provenance(library_version="benchmark", meta_train_seconds=result.wall_seconds,
                              meta_iterations=result.iterations, best_iteration=result.best_iteration),
    )
    save_trained_optimizer(args.out / "optimizer", TrainedOptimizer(manifest, result.net))
    rows = []
    with cpu_threads(config.cpu_threads):
        variants = [["trained config"], *args.variant]
        for label, *assignments in variants:
            fields = parse_assignments(assignments)
            steps = fields.pop("steps", config.evaluation_steps)
            variant_family = benchmark_family(args.family, {**family.model_dump(mode="json"), **fields})
            report = evaluate(result.net, variant_family, args.family, config.evaluation, steps, device)
            write_evaluation(report, args.out / label.replace(" ", "_"))
            rows.append(report_row(label, report))
    summary = {
        "command": " ".join(sys.argv), "machine": machine_info(), "preset": config.preset,
        "meta_train_seconds": result.wall_seconds, "meta_iterations": result.iterations,
        "best_iteration": result.best_iteration, "torch_threads": torch.get_num_threads(), "rows": rows,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n`python {summary['command']}` — {summary['machine']}")
    print(f"preset {config.preset}: {result.iterations} meta-iterations in {result.wall_seconds:.0f} s "
          f"(best at {result.best_iteration})\n")
    print("| variant | steps | learned mean / geomean | best baseline (lr) mean / geomean | ratio mean / geomean | win-rate | beats all |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['steps']} | {r['learned_mean']:.4g} / {r['learned_geomean']:.4g} "
              f"| {r['best_baseline']} ({r['best_baseline_lr']:.3g}) {r['baseline_mean']:.4g} / {r['baseline_geomean']:.4g} "
              f"| {r['ratio_mean']:.2f}× / {r['ratio_geomean']:.2f}× | {r['win_rate']:.0%} | {r['beats_every_baseline']} |")


if __name__ == "__main__":
    main()
