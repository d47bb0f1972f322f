"""Run the learned optimizer over a stack of tasks at once (meta-training and evaluation).

All tasks' coordinates of one parameter group go through one LSTM call, with per-task
segments; gradients of all tasks come from one autograd call, because tasks are independent:
d(sum_k f_k)/d(theta_k) = d(f_k)/d(theta_k).
"""

from __future__ import annotations

import torch

from l2l_plugin.families import Params, TaskStack
from l2l_plugin.optimizer.features import loss_feature
from l2l_plugin.optimizer.network import CoordinateState, LSTMOptimizerNet, Segments


class OptimizeeBatch:
    """Parameters of a stack of tasks and the learned optimizer's state over them."""

    def __init__(self, net: LSTMOptimizerNet, stack: TaskStack, device: torch.device) -> None:
        self.net = net
        self.stack = stack
        self.params: Params = {
            name: value.detach().requires_grad_(True) for name, value in stack.init_params(device).items()
        }
        config = net.config
        task_index = torch.arange(stack.size, device=device)
        # Per group, the parameter names whose rows are concatenated (task-major inside each).
        self.layout: dict[str, list[str]] = {}
        self.segments: dict[str, Segments] = {}
        self.state: dict[str, CoordinateState] = {}
        self.steps = 0  # steps taken so far (the same for every task of the stack)
        for group in config.group_names:
            names = [name for name in self.params if config.group_of(name) == group]
            if not names:
                continue
            per_task = [self.params[name][0].numel() for name in names]
            ids = torch.cat([task_index.repeat_interleave(size) for size in per_task])
            self.layout[group] = names
            self.segments[group] = Segments.from_ids(ids, stack.size)
            self.state[group] = net.initial_state(ids.numel(), device)

    def losses(self, step: int) -> torch.Tensor:
        """(size,) training losses of every task at ``step``."""
        return self.stack.losses(self.params, step)

    def eval_losses(self) -> torch.Tensor | None:
        with torch.no_grad():
            return self.stack.eval_losses(self.params)

    def step(self, losses: torch.Tensor, track_meta_gradient: bool) -> None:
        """Update every task's parameters from ``losses`` (the output of :meth:`losses`)."""
        names = list(self.params)
        grads = torch.autograd.grad(
            losses.sum(), [self.params[n] for n in names], retain_graph=track_meta_gradient, allow_unused=True
        )
        grad_of = {n: g if g is not None else torch.zeros_like(self.params[n]) for n, g in zip(names, grads)}
        with torch.set_grad_enabled(track_meta_gradient):
            loss_features = loss_feature(losses, self.net.config) if self.net.config.loss_input else None
            for group, group_names in self.layout.items():
                segments = self.segments[group]
                grad = torch.cat([grad_of[n].reshape(-1) for n in group_names])
                rows = loss_features[segments.ids] if loss_features is not None else None
                param = (
                    torch.cat([self.params[n].detach().reshape(-1) for n in group_names])
                    if self.net.config.param_input
                    else None
                )
                if track_meta_gradient or self.net.config.couples_coordinates:
                    update, self.state[group] = self.net(
                        group, grad, self.state[group], steps=self.steps, param=param, loss_rows=rows, segments=segments
                    )
                else:  # the state is ours alone: step it in place
                    update = self.net.step_(group, grad, self.state[group], steps=self.steps, param=param, loss_rows=rows)
                for name, delta in zip(group_names, update.split([self.params[n].numel() for n in group_names])):
                    new = self.params[name] + delta.view_as(self.params[name])
                    self.params[name] = new if track_meta_gradient else new.detach().requires_grad_(True)
            if not track_meta_gradient:
                self.state = {group: state.detach() for group, state in self.state.items()}
        self.steps += 1

    def truncate(self) -> None:
        """Cut the graph (truncated BPTT): later losses no longer reach earlier updates."""
        self.params = {name: value.detach().requires_grad_(True) for name, value in self.params.items()}
        self.state = {group: state.detach() for group, state in self.state.items()}


def run_learned(
    net: LSTMOptimizerNet, stack: TaskStack, steps: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The learned optimizer on ``stack`` without meta-gradients.

    Returns the (size, steps + 1) training-loss curves and the (size,) held-out losses at the
    end (``None`` when the family has no held-out loss).
    """
    batch = OptimizeeBatch(net, stack, device)
    curve = []
    for step in range(steps):
        losses = batch.losses(step)
        curve.append(losses.detach())
        batch.step(losses, track_meta_gradient=False)
    with torch.no_grad():
        curve.append(batch.losses(steps))
    eval_losses = batch.eval_losses()
    return torch.stack(curve, dim=1).cpu(), None if eval_losses is None else eval_losses.cpu()
