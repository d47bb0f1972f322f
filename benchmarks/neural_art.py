"""How much room a neural_art config leaves a faster optimizer: tuned Adam at 100 against 400 steps.

    python benchmarks/neural_art.py --set resolution=32 --content-weights 1.0 0.1 0.01

For each content weight, Adam at each learning rate runs 400 steps on the same tasks; the
figures are the mean and geometric mean of the loss at step 100 and at step 400. When the
best rate's loss at 100 is close to its loss at 400 the problem is solved within the horizon
and a learned optimizer has nothing to gain (BENCHMARKS.md, "Neural art"). The family's
meta-training benchmark itself is benchmarks/quality.py neural_art --variant ….
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from l2l_plugin.cli import parse_assignments
from l2l_plugin.families import make_family

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402


def _geomean(values: torch.Tensor) -> float:
    return float(values.log().mean().exp())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], help="family config field KEY=VALUE")
    parser.add_argument("--content-weights", type=float, nargs="+", default=[1.0, 0.1, 0.01])
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.03, 0.1, 0.3])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--steps", type=int, nargs=2, default=[100, 400], metavar=("HORIZON", "LONG"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    horizon, long = args.steps

    print(f"`python {' '.join(sys.argv)}` — {machine_info()}\n")
    print(f"| content weight | Adam lr | mean @{horizon} | mean @{long} | geomean @{horizon} | geomean @{long} |")
    print("|---|---|---|---|---|---|")
    for weight in args.content_weights:
        family = make_family("neural_art", {**parse_assignments(args.set), "content_weight": weight})
        stack = family.sample_stack(list(range(100, 100 + args.tasks)))  # seeds no meta-training uses first
        start = stack.init_params()["image"]
        for lr in args.lrs:
            image = start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([image], lr=lr)
            at: dict[int, torch.Tensor] = {}
            for step in range(1, long + 1):
                optimizer.zero_grad()
                losses = stack.losses({"image": image})
                losses.sum().backward()
                optimizer.step()
                if step in (horizon, long):
                    at[step] = losses.detach()
            print(
                f"| {weight:g} | {lr:g} | {float(at[horizon].mean()):.4g} | {float(at[long].mean()):.4g} "
                f"| {_geomean(at[horizon]):.4g} | {_geomean(at[long]):.4g} |"
            )


if __name__ == "__main__":
    main()
