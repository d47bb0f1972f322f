"""Seconds per meta-iteration (an unroll forward and its meta-gradient) of a family's recipe.

    python benchmarks/meta_iteration.py mnist_mlp --unroll 20 --iterations 5
    python benchmarks/meta_iteration.py mnist_mlp --unroll 100 --iterations 3

Times the library's fused feature-major LSTM cell (hand-written backward) against the
reference formulation (``torch.nn.LSTMCell`` through autograd on row-major tensors) in the
same process, alternating, so the ratio survives a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

import l2l_plugin.optimizer.network as network
from l2l_plugin import make_family
from l2l_plugin.optimizer import LSTMOptimizerNet
from l2l_plugin.optimizer.rollout import OptimizeeBatch
from l2l_plugin.pipeline import resolve_meta_train_config
from l2l_plugin.training.seeds import training_seed

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_info  # noqa: E402

FUSED = network.lstm_cell


def reference_lstm_cell(x, h, c, cell):  # noqa: ANN001, ANN201
    """The plain formulation: nn.LSTMCell on coordinate rows, autograd for the backward."""
    h_new, c_new = cell(x.T, (h.T, c.T))
    return h_new.T, c_new.T


def one_iteration(net: LSTMOptimizerNet, family, unroll: int, seed: int, device: torch.device | None = None) -> float:
    device = device or torch.device("cpu")
    stack = family.sample_stack([training_seed(0, seed)])
    batch = OptimizeeBatch(net, stack, device)
    started = time.perf_counter()
    losses = batch.losses(0)
    meta_loss = torch.zeros((), device=device)
    for step in range(unroll):
        batch.step(losses, track_meta_gradient=True)
        losses = batch.losses(step + 1)
        meta_loss = meta_loss + losses.mean()
    net.zero_grad(set_to_none=True)
    (meta_loss / unroll).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family")
    parser.add_argument("--preset", default=None, help="meta-training preset (default: the family's)")
    parser.add_argument("--unroll", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    family = make_family(args.family, {})
    config = resolve_meta_train_config(family, {"preset": args.preset} if args.preset else {})
    torch.manual_seed(0)
    net = LSTMOptimizerNet(config.network).to(device)
    times: dict[str, list[float]] = {"fused": [], "reference": []}
    for k in range(args.iterations + 1):  # the first round warms up both
        for name, cell in (("fused", FUSED), ("reference", reference_lstm_cell)):
            network.lstm_cell = cell
            elapsed = one_iteration(net, family, args.unroll, k, device)
            if k:
                times[name].append(elapsed)
    network.lstm_cell = FUSED
    medians = {name: statistics.median(values) for name, values in times.items()}
    machine = machine_info()
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    summary = {
        "command": " ".join(sys.argv), "machine": machine, "device": str(device), "preset": config.preset,
        "unroll": args.unroll, "seconds": times, "median_seconds": medians,
        "speedup": medians["reference"] / medians["fused"],
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    print(f"`python {summary['command']}` — {machine}\n")
    print("| family | preset | unroll | fused s/iteration | reference s/iteration | speed-up |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.family} | {config.preset} | {args.unroll} | {medians['fused']:.2f} | {medians['reference']:.2f} "
          f"| {summary['speedup']:.2f}× |")


if __name__ == "__main__":
    main()
