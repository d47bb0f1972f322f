"""``LearnedOptimizer``: a trained LSTM optimizer as an ordinary ``torch.optim.Optimizer``."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer

from l2l_plugin.artifacts import TrainedOptimizer, load_trained_optimizer
from l2l_plugin.optimizer.config import DEFAULT_GROUP
from l2l_plugin.optimizer.network import CoordinateState, LSTMOptimizerNet, loss_feature

_LSTM_KEY = "lstm_state"
_MOMENTS_KEY = "moments"


def _as_float(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else value.float()


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
        self._net_groups: dict[torch.Tensor, str] = {}
        self._nets: dict[torch.device, LSTMOptimizerNet] = {}
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
        param = group["params"][index]
        # The group of a parameter never changes: match its name against the rules once.
        if (cached := self._net_groups.get(param)) is None:
            names = group.get("param_names")
            cached = self.net.config.group_of(names[index]) if names else DEFAULT_GROUP
            self._net_groups[param] = cached
        return cached

    def _net_on(self, device: torch.device) -> LSTMOptimizerNet:
        """The net on ``device``: a copy per device, so a net shared with others never moves."""
        net = self._nets.get(device)
        if net is None or next(net.parameters()).device != device:  # the shared net may have moved
            net = self.net if next(self.net.parameters()).device == device else copy.deepcopy(self.net).to(device)
            self._nets[device] = net
        return net

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

        # Coordinates of every parameter group meet in one LSTM call per net group (and device),
        # so global averaging cells average over the whole model, as in meta-training.
        members: dict[tuple[str, torch.device], list[tuple[torch.Tensor, float]]] = {}
        for group in self.param_groups:
            for index, param in enumerate(group["params"]):
                if param.grad is None:
                    continue
                if param.grad.is_sparse:
                    raise RuntimeError("LearnedOptimizer does not support sparse gradients")
                if not param.grad.is_floating_point():
                    raise RuntimeError(f"LearnedOptimizer needs floating-point gradients, got {param.grad.dtype}")
                members.setdefault((self._net_group_of(group, index), param.device), []).append((param, group["lr"]))

        for (net_group, device), entries in members.items():
            net = self._net_on(device)
            params = [p for p, _ in entries]
            for p in params:
                state = self.state[p]
                if _LSTM_KEY not in state:
                    initial = net.initial_state(p.numel(), device)
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state[_LSTM_KEY] = initial.lstm
                    if initial.moments is not None:
                        state[_MOMENTS_KEY] = initial.moments
            sizes = [p.numel() for p in params]
            grad = torch.cat([p.grad.reshape(-1).float() for p in params])
            coordinate_state = CoordinateState.cat(
                # float(): Optimizer.load_state_dict casts state to each parameter's dtype.
                [CoordinateState(self.state[p][_LSTM_KEY].float(), _as_float(self.state[p].get(_MOMENTS_KEY))) for p in params]
            )
            step_counts = [self.state[p]["step"] for p in params]
            if all(bool(count == step_counts[0]) for count in step_counts):
                steps = step_counts[0].to(device)
            else:  # parameters that skipped steps (no gradient) keep their own count
                steps = torch.cat([count.expand(size) for count, size in zip(step_counts, sizes)]).to(device)
            param_rows = torch.cat([p.reshape(-1).float() for p in params]) if config.param_input else None
            loss_rows = None
            if config.loss_input:
                value = torch.as_tensor(loss, dtype=torch.float32, device=device).detach()
                loss_rows = loss_feature(value, config).expand(grad.numel())
            update, new_state = net(net_group, grad, coordinate_state, steps=steps, param=param_rows, loss_rows=loss_rows)
            for (p, lr), delta, state_slice in zip(entries, update.split(sizes), new_state.split(sizes)):
                p.add_(delta.view_as(p).to(p.dtype), alpha=lr)
                self.state[p][_LSTM_KEY] = state_slice.lstm
                if state_slice.moments is not None:
                    self.state[p][_MOMENTS_KEY] = state_slice.moments
                self.state[p]["step"] += 1
        return loss
