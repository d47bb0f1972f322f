"""Hand-designed baselines from ``torch.optim``, run over a grid of learning rates at once.

SGD, NAG, RMSprop and Adam are elementwise, so one optimizer instance over the parameters of
many (learning rate, task) pairs, with the sum of their losses, moves each pair exactly as a
separate run would; each learning rate is a parameter group.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from l2l_plugin.families import TaskStack

OptimizerFactory = Callable[[list[dict]], torch.optim.Optimizer]


def baseline_factory(name: str, nag_momentum: float = 0.9) -> OptimizerFactory:
    factories: dict[str, OptimizerFactory] = {
        "sgd": lambda groups: torch.optim.SGD(groups),
        "nag": lambda groups: torch.optim.SGD(groups, momentum=nag_momentum, nesterov=True),
        "rmsprop": lambda groups: torch.optim.RMSprop(groups),
        "adam": lambda groups: torch.optim.Adam(groups),
    }
    if name not in factories:
        raise ValueError(f"unknown baseline {name!r}; available: {', '.join(factories)}")
    return factories[name]


def run_baseline(
    factory: OptimizerFactory,
    stack: TaskStack,
    learning_rates: Sequence[float],
    steps: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Curves (lrs, tasks, steps + 1) and final held-out losses (lrs, tasks) or ``None``.

    Every learning rate starts from its own fresh copy of the stack's initial parameters.
    """
    params = [
        {name: value.detach().requires_grad_(True) for name, value in stack.init_params(device).items()}
        for _ in learning_rates
    ]
    optimizer = factory([{"params": list(p.values()), "lr": lr} for p, lr in zip(params, learning_rates)])
    curve = []
    for step in range(steps):
        losses = torch.stack([stack.losses(p, step) for p in params])
        curve.append(losses.detach())
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        optimizer.step()
    with torch.no_grad():
        curve.append(torch.stack([stack.losses(p, steps) for p in params]))
        held_out = [stack.eval_losses(p) for p in params]
    eval_losses = None if any(h is None for h in held_out) else torch.stack(held_out).cpu()
    return torch.stack(curve, dim=2).cpu(), eval_losses
