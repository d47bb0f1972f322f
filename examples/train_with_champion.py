"""A training pipeline that uses the registry's champion optimizer instead of Adam.

    .venv/bin/l2l demo                                  # once: meta-train and register one
    .venv/bin/python examples/train_with_champion.py    # then: any training job

The optimizer comes from the MLflow registry (the embedded store by default; set
MLFLOW_TRACKING_URI for an `mlflow server`) and is an ordinary torch.optim.Optimizer. The model
here is a linear least-squares regression — the kind of problem the `quadratic` optimizer was
meta-trained on. It runs for the meta-training horizon (100 steps by default): a learned
optimizer is only trained for that many steps.
"""

from __future__ import annotations

import argparse
import sys

import torch

from l2l_registry import OptimizerNotFoundError, champion_uri, load_optimizer


def make_data(seed: int, samples: int = 64, features: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, features, generator=generator)
    weights = torch.randn(features, 1, generator=generator)
    targets = inputs @ weights + 0.1 * torch.randn(samples, 1, generator=generator)
    return inputs, targets


def train(optimizer_uri: str, steps: int, seed: int) -> list[float]:
    inputs, targets = make_data(seed)
    torch.manual_seed(seed)
    model = torch.nn.Linear(inputs.shape[1], 1)

    # The one line a pipeline needs (family= only makes a mismatch warn; it is optional).
    optimizer = load_optimizer(optimizer_uri, model.parameters(), family="quadratic")

    def closure() -> torch.Tensor:  # the standard torch API: works for Adam, LBFGS and this
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        return loss

    losses = []
    for step in range(steps):
        loss = optimizer.step(closure).item()
        losses.append(loss)
        if step % max(1, steps // 10) == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss:.5g}")
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--optimizer", default=champion_uri("quadratic"), help="models:/…, runs:/… or a directory"
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"optimizer: {args.optimizer}")
    try:
        losses = train(args.optimizer, args.steps, args.seed)
    except OptimizerNotFoundError as exc:
        print(
            f"error: {exc}\n(run `.venv/bin/l2l demo` first to meta-train and register one)", file=sys.stderr
        )
        return 1
    print(f"loss: {losses[0]:.5g} -> {losses[-1]:.5g} in {len(losses)} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
