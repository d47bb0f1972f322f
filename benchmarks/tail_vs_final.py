"""Final-step loss against the mean of the last 10 steps, learned vs tuned NAG (a diagnosis).

    python benchmarks/tail_vs_final.py /tmp/q/teacher4/optimizer --nag-lr 0.1

On a family whose final loss is one noisy minibatch, a learned optimizer can win on the
validation tasks and lose on held-out ones by noise alone; this prints both figures on the
validation and on the held-out tasks, and the zero-head optimizer (the nominal step at the
learned rate) as a control. teacher_mlp only (the benchmark's throwaway family).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

from l2l_plugin import load_trained_optimizer
from l2l_plugin.evaluation.baselines import baseline_factory, run_baseline
from l2l_plugin.optimizer.rollout import run_learned
from l2l_plugin.training.seeds import held_out_seeds, validation_seeds

sys.path.insert(0, str(Path(__file__).parent))
from families.teacher_mlp import TeacherMlpFamily  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("optimizer_dir", type=Path)
    parser.add_argument("--nag-lr", type=float, required=True, help="tuned NAG rate (from the run's report)")
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    family = TeacherMlpFamily()
    trained = load_trained_optimizer(args.optimizer_dir)
    zero_head = copy.deepcopy(trained.net)
    with torch.no_grad():
        for sub in zero_head.nets.values():
            sub.head.weight.zero_()
            sub.head.bias.zero_()
    cpu = torch.device("cpu")
    print("| tasks | learned final / last-10 | zero-head final | NAG final / last-10 |")
    print("|---|---|---|---|")
    for name, seeds in (("32 validation", validation_seeds(32)), ("100 held-out", held_out_seeds(100))):
        stack = family.sample_stack(seeds)
        learned, _ = run_learned(trained.net, stack, args.steps, cpu)
        control, _ = run_learned(zero_head, stack, args.steps, cpu)
        nag, _ = run_baseline(baseline_factory("nag"), stack, [args.nag_lr], args.steps, cpu)
        print(f"| {name} | {learned[:, -1].mean():.4f} / {learned[:, -10:].mean():.4f} | {control[:, -1].mean():.4f} "
              f"| {nag[0, :, -1].mean():.4f} / {nag[0, :, -10:].mean():.4f} |")


if __name__ == "__main__":
    main()
