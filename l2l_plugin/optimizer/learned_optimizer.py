"""``LearnedOptimizer``: a trained LSTM optimizer as an ordinary ``torch.optim.Optimizer``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer

from l2l_plugin.artifacts import TrainedOptimizer, load_trained_optimizer
from l2l_plugin.optimizer.config import DEFAULT_GROUP
from l2l_plugin.optimizer.network import LSTMOptimizerNet, loss_feature

_STATE_KEY = "lstm_state"


class LearnedOptimizer(Optimizer):
    """Apply a meta-trained coordinatewise LSTM to the parameters of any model.

    ``params`` may be ``model.parameters()`` or ``model.named_parameters()``; names are needed
    only when the optimizer has separate LSTMs per parameter group. ``lr`` multiplies the
    learned update (1.0 = as meta-trained), so learning-rate schedulers work unchanged.

    Optimizers trained with ``loss_input`` need the loss at each step: pass ``closure`` (as for
    LBFGS) or ``loss=``.
    """

    def __init__(
        self,
        params: Iterable[Any],
        optimizer: TrainedOptimizer | str | Path,
        lr: float = 1.0,
    ) -> None:
        if not (lr > 0.0):
            raise ValueError(f"Invalid learning rate (update multiplier): {lr}")
        trained = optimizer if isinstance(optimizer, TrainedOptimizer) else load_trained_optimizer(optimizer)
        super().__init__(params, {"lr": lr})
        self.trained = trained
        self.net: LSTMOptimizerNet = trained.net
        self.net.requires_grad_(False)
        config = self.net.config
        if config.groups and any("param_names" not in group for group in self.param_groups):
            warnings.warn(
                "this optimizer has separate LSTMs per parameter group but was given parameters "
                "without names; pass model.named_parameters() to use them. Using the "
                f"'{DEFAULT_GROUP}' LSTM for every parameter.",
                UserWarning,
                stacklevel=2,
            )

    def _net_group_of(self, group: dict[str, Any], index: int) -> str:
        names = group.get("param_names")
        return self.net.config.group_of(names[index]) if names else DEFAULT_GROUP

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None, *, loss: torch.Tensor | float | None = None):
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        config = self.net.config
        if config.loss_input and loss is None:
            raise ValueError(
                "this learned optimizer was trained with the loss as an input: call step(closure) "
                "or step(loss=loss)"
            )

        # Coordinates of every parameter group meet in one LSTM call per net group, so global
        # averaging cells average over the whole model, as in meta-training.
        members: dict[str, list[tuple[torch.Tensor, float]]] = {}
        for group in self.param_groups:
            for index, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("LearnedOptimizer does not support sparse gradients")
                if not param.grad.is_floating_point():
                    raise RuntimeError(f"LearnedOptimizer needs floating-point gradients, got {param.grad.dtype}")
                members.setdefault(self._net_group_of(group, index), []).append((param, group["lr"]))

        for net_group, entries in members.items():
            params = [p for p, _ in entries]
            device = params[0].device
            if next(self.net.parameters()).device != device:
                self.net.to(device)
            for p in params:
                state = self.state[p]
                if _STATE_KEY not in state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state[_STATE_KEY] = self.net.initial_state(p.numel(), device)
            grad = torch.cat([p.grad.reshape(-1).float() for p in params])
            lstm_state = torch.cat([self.state[p][_STATE_KEY].float() for p in params], dim=1)
            rows = None
            if config.loss_input:
                value = torch.as_tensor(loss, dtype=torch.float32, device=device).detach()
                rows = loss_feature(value, config).expand(grad.numel())
            update, new_state = self.net(net_group, grad, lstm_state, rows, None)
            sizes = [p.numel() for p in params]
            for (p, lr), delta, state_slice in zip(entries, update.split(sizes), new_state.split(sizes, dim=1)):
                p.add_(delta.view_as(p).to(p.dtype), alpha=lr)
                self.state[p][_STATE_KEY] = state_slice
                self.state[p]["step"] += 1
        return loss
