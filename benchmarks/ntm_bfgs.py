"""NTM-BFGS against the LSTM optimizer and the tuned baselines, at the same meta-training budget.

    python benchmarks/ntm_bfgs.py quadratic --meta meta_iterations=300 --out /tmp/ntm/quadratic
    python benchmarks/ntm_bfgs.py mnist_mlp --meta meta_iterations=40 --memory slots=4 --out /tmp/ntm/mnist

Both architectures get the family's own recipe (its ``meta_train_defaults``) with the same
overrides; they differ only in ``network.kind`` (and ``network.memory`` for NTM-BFGS, from
--memory). ``max_seconds`` is switched off, so both run exactly ``meta_iterations`` on the same
task stream (same seed: same unrolls and tasks). The baselines are tuned once and every optimizer
runs on the same held-out instances: the LSTM's evaluation is the library's ``evaluate``, and
NTM-BFGS's learned row replaces the LSTM's in that report. A last row, "ntm_bfgs, reads zeroed",
runs the trained NTM-BFGS with the weights that carry its memory reads (into the head and into
the controller's input) set to zero: how much of its result the memory carries. Writes
``summary.json`` and both trained optimizers under --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from l2l_plugin.artifacts import OptimizerManifest, Provenance, TrainedOptimizer, save_trained_optimizer
from l2l_plugin.cli import parse_assignments
from l2l_plugin.evaluation import LEARNED, EvaluationReport, OptimizerResult, evaluate
from l2l_plugin.optimizer import LSTMOptimizerNet
from l2l_plugin.optimizer.rollout import run_learned
from l2l_plugin.training import MetaTrainConfig, cpu_threads, meta_train, resolve_device
from l2l_plugin.training.presets import deep_merge, meta_train_recipe
from l2l_plugin.training.seeds import held_out_seeds

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402
from quality import benchmark_family, report_row  # noqa: E402

KINDS = ("lstm", "ntm_bfgs")


def with_learned(report: EvaluationReport, learned: OptimizerResult) -> EvaluationReport:
    """``report`` with another learned optimizer's row (same instances, same tuned baselines)."""
    return EvaluationReport.build(
        family=report.family,
        family_config=report.family_config,
        steps=report.steps,
        test_seeds=report.test_seeds,
        tuning_seeds=report.tuning_seeds,
        optimizers={**report.optimizers, LEARNED: learned},
    )


def without_reads(net: LSTMOptimizerNet) -> LSTMOptimizerNet:
    """A copy of an NTM-BFGS net whose memory reads reach neither the update nor the controller."""
    ablated = copy.deepcopy(net)
    features, hidden = net.config.num_features, net.config.hidden_size
    with torch.no_grad():
        for controller in ablated.nets.values():
            controller.head.weight[:, hidden:] = 0
            controller.cells[0].weight_ih[:, features:] = 0
    return ablated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family")
    parser.add_argument("--set", action="append", default=[], help="family config field KEY=VALUE")
    parser.add_argument("--meta", action="append", default=[], help="meta-training override KEY=VALUE (both kinds)")
    parser.add_argument("--memory", action="append", default=[], help="NTM-BFGS memory field KEY=VALUE")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    family = benchmark_family(args.family, parse_assignments(args.set))
    overrides = deep_merge(parse_assignments(args.meta), {"max_seconds": None})
    memory = parse_assignments(args.memory)
    rows, trained = [], {}
    for kind in KINDS:
        network = {"kind": kind, **({"memory": memory} if kind == "ntm_bfgs" else {})}
        recipe = meta_train_recipe(type(family).meta_train_defaults, deep_merge(overrides, {"network": network}))
        config = MetaTrainConfig.model_validate(recipe)
        result = meta_train(family, config, checkpoint_dir=args.out / kind / "checkpoint")
        trained[kind] = (result, result.config or config)
        manifest = OptimizerManifest(
            network=trained[kind][1].network, family=args.family, family_config=family.model_dump(mode="json"),
            meta_training=trained[kind][1].model_dump(mode="json"),
            provenance=Provenance(library_version="benchmark", meta_train_seconds=result.wall_seconds,
                                  meta_iterations=result.iterations, best_iteration=result.best_iteration),
        )
        save_trained_optimizer(args.out / kind / "optimizer", TrainedOptimizer(manifest, result.net))
        print(f"{kind}: {result.iterations} meta-iterations in {result.wall_seconds:.0f} s "
              f"(best at {result.best_iteration})", file=sys.stderr)

    lstm_result, config = trained["lstm"]
    device = resolve_device(config.device)
    steps = config.evaluation_steps
    with cpu_threads(config.cpu_threads):
        report = evaluate(lstm_result.net, family, args.family, config.evaluation, steps, device)
        held_out = family.sample_stack(held_out_seeds(config.evaluation.test_tasks))
        assert report.test_seeds == held_out_seeds(config.evaluation.test_tasks)
        for label, kind in [*zip(KINDS, KINDS), ("ntm_bfgs, reads zeroed", "ntm_bfgs")]:
            result, kind_config = trained[kind]
            if label == "lstm":
                kind_report = report
            else:
                net = result.net if label == kind else without_reads(result.net)
                curves, eval_losses = run_learned(net, held_out, steps, device)
                kind_report = with_learned(report, OptimizerResult.from_curves(curves, eval_losses))
            row = report_row(label, kind_report)
            row.update(
                meta_iterations=result.iterations,
                meta_train_seconds=result.wall_seconds,
                best_iteration=result.best_iteration,
                state_bytes_per_coordinate=result.net.state_bytes_per_coordinate(),
                network=kind_config.network.model_dump(mode="json"),
            )
            rows.append(row)
    summary = {"command": " ".join(sys.argv), "machine": machine_info(), "preset": config.preset,
               "torch_threads": torch.get_num_threads(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\n`python {summary['command']}` — {summary['machine']}")
    print(f"{args.family}, preset {config.preset}, {report.steps} steps, {len(report.test_seeds)} held-out tasks\n")
    print("| optimizer | meta-iterations (s) | state B/coord | learned mean / geomean "
          "| best baseline (lr) mean / geomean | ratio mean / geomean | win-rate | beats all |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['meta_iterations']} ({r['meta_train_seconds']:.0f} s) "
              f"| {r['state_bytes_per_coordinate']} | {r['learned_mean']:.4g} / {r['learned_geomean']:.4g} "
              f"| {r['best_baseline']} ({r['best_baseline_lr']:.3g}) {r['baseline_mean']:.4g} / "
              f"{r['baseline_geomean']:.4g} | {r['ratio_mean']:.2f}× / {r['ratio_geomean']:.2f}× "
              f"| {r['win_rate']:.0%} | {r['beats_every_baseline']} |")
    print("\nall (mean / geomean / lr):", json.dumps(rows[0]["all"]))


if __name__ == "__main__":
    main()
