"""``LearnedOptimizer``: a trained LSTM optimizer as an ordinary ``torch.optim.Optimizer``."""

from __future__ import annotations

import copy
import itertools
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.optim import Optimizer

from l2l_plugin.artifacts import TrainedOptimizer, load_trained_optimizer
from l2l_plugin.optimizer.config import DEFAULT_GROUP
from l2l_plugin.optimizer.features import loss_feature
from l2l_plugin.optimizer.network import CoordinateState, LSTMOptimizerNet

_LSTM_KEY = "lstm_state"
_MOMENTS_KEY = "moments"
_MEMORY_KEY = "memory"  # NTM-BFGS: the write history and last reads (float32)


#: Parameters smaller than this share one LSTM call (concatenated); larger ones step alone, in place.
_SHARED_CALL_BELOW = 65_536


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

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # torch.optim casts floating state to each parameter's dtype, which would truncate the
        # LSTM state and moments of a bfloat16 model: restore them in their own dtypes.
        super().load_state_dict(state_dict)
        saved_ids = itertools.chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        params = itertools.chain.from_iterable(g["params"] for g in self.param_groups)
        for saved_id, param in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id, {})
            if _LSTM_KEY in saved:
                self.state[param][_LSTM_KEY] = saved[_LSTM_KEY].to(param.device, self.net.lstm_state_dtype, copy=True)
            for key in (_MOMENTS_KEY, _MEMORY_KEY):
                if key in saved:
                    self.state[param][key] = saved[key].to(param.device, torch.float32, copy=True)

    def _coordinate_state(self, net: LSTMOptimizerNet, param: torch.Tensor) -> CoordinateState:
        """The parameter's state, created on first use and kept in the net's storage dtypes."""
        state = self.state[param]
        if _LSTM_KEY not in state:
            initial = net.initial_state(param.numel(), param.device)
            state["step"] = torch.zeros((), dtype=torch.float32)
            state[_LSTM_KEY] = initial.lstm
            if initial.moments is not None:
                state[_MOMENTS_KEY] = initial.moments
            if initial.memory is not None:
                state[_MEMORY_KEY] = initial.memory
        lstm = state[_LSTM_KEY]
        if lstm.dtype != net.lstm_state_dtype or lstm.device != param.device or not lstm.is_contiguous():
            state[_LSTM_KEY] = lstm = lstm.to(param.device, net.lstm_state_dtype).contiguous()
        floats = []
        for key in (_MOMENTS_KEY, _MEMORY_KEY):
            value = state.get(key)
            if value is not None and (value.dtype != torch.float32 or value.device != param.device):
                state[key] = value = value.to(param.device, torch.float32).contiguous()
            floats.append(value)
        return CoordinateState(lstm, *floats)

    def _inputs(
        self, params: list[torch.Tensor], device: torch.device, loss: torch.Tensor | float | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The flat gradient, step counts, parameter rows and loss rows of ``params``."""
        config = self.net.config
        grad = params[0].grad.reshape(-1) if len(params) == 1 else torch.cat([p.grad.reshape(-1) for p in params])
        step_counts = [self.state[p]["step"] for p in params]
        if all(bool(count == step_counts[0]) for count in step_counts):
            steps = step_counts[0].to(device)
        else:  # parameters that skipped steps (no gradient) keep their own count
            steps = torch.cat([count.expand(p.numel()) for count, p in zip(step_counts, params)]).to(device)
        param_rows = torch.cat([p.reshape(-1).float() for p in params]) if config.param_input else None
        loss_rows = None
        if config.loss_input:
            value = torch.as_tensor(loss, dtype=torch.float32, device=device).detach()
            loss_rows = loss_feature(value, config).expand(grad.numel())
        return grad, steps, param_rows, loss_rows

    def _step_entries(
        self,
        net: LSTMOptimizerNet,
        net_group: str,
        entries: list[tuple[torch.Tensor, float]],
        loss: torch.Tensor | float | None,
    ) -> None:
        """One LSTM call over ``entries``' coordinates: in place, or (averaging cells) all at once."""
        params = [p for p, _ in entries]
        states = [self._coordinate_state(net, p) for p in params]
        sizes = [p.numel() for p in params]
        grad, steps, param_rows, loss_rows = self._inputs(params, params[0].device, loss)
        shared = states[0] if len(states) == 1 else CoordinateState.cat(states)
        inputs = {"steps": steps, "param": param_rows, "loss_rows": loss_rows}
        if net.config.couples_coordinates:  # averaging or memory reads: one differentiable-path call
            update, new_state = net(net_group, grad.float(), shared, **inputs)
            for p, piece in zip(params, new_state.split(sizes)):
                self.state[p][_LSTM_KEY] = piece.lstm.to(net.lstm_state_dtype)
                if piece.moments is not None:
                    self.state[p][_MOMENTS_KEY] = piece.moments
                if piece.memory is not None:
                    self.state[p][_MEMORY_KEY] = piece.memory
        else:
            update = net.step_(net_group, grad, shared, **inputs)
            if len(states) > 1:  # the shared call worked on a copy: write it back
                for state, piece in zip(states, shared.split(sizes)):
                    state.lstm.copy_(piece.lstm)
                    if state.moments is not None:
                        state.moments.copy_(piece.moments)
        for (p, lr), delta in zip(entries, update.split(sizes)):
            p.add_(delta.view_as(p).to(p.dtype), alpha=lr)
            self.state[p]["step"] += 1

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
        # so global averaging cells average, and NTM-BFGS's memory takes its inner products, over
        # the whole model, as in meta-training.
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
            if config.couples_coordinates:  # averaging cells and memory reads span the whole model: one call
                calls = [entries]
            else:
                # Large tensors step alone, their state updated in place; small ones share a call,
                # since a call's fixed cost is dozens of small ops.
                calls = [[entry] for entry in entries if entry[0].numel() >= _SHARED_CALL_BELOW]
                if small := [entry for entry in entries if entry[0].numel() < _SHARED_CALL_BELOW]:
                    calls.append(small)
            for call in calls:
                self._step_entries(net, net_group, call, loss)
        return loss
