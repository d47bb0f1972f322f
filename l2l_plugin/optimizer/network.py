"""The coordinatewise LSTM: one small network applied to every coordinate of the optimizee.

Coordinates are columns of a batch (feature-major: every feature, gate and hidden unit is one
contiguous row over all coordinates, which keeps the elementwise work vectorised), so the
weights are shared and the state is per coordinate.
Several optimizees (a meta-batch of tasks) may share one call: ``segments`` says which
coordinates belong to which optimizee, so global averaging cells, NTM-BFGS's memory reads and
the loss input stay per optimizee.

:meth:`LSTMOptimizerNet.forward` is the one functional core of the optimizer (features →
LSTM layers → update): meta-training's rollout and the ``torch.optim`` drop-in both call it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from l2l_plugin.optimizer.config import OptimizerNetConfig
from l2l_plugin.optimizer.features import gradient_features, normalized_moments, update_moments
from l2l_plugin.optimizer.lstm_cell import lstm_cell, lstm_cell_
from l2l_plugin.optimizer.memory import OuterProductMemory, check_memory_size

STATE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Segments:
    """Rows → optimizee index, for per-optimizee averages over a batch of coordinates."""

    ids: torch.Tensor  # (N,) int64
    counts: torch.Tensor  # (S, 1) float, rows per optimizee

    @classmethod
    def from_ids(cls, ids: torch.Tensor, count: int) -> Segments:
        counts = torch.bincount(ids, minlength=count).to(torch.float32).clamp_min(1).unsqueeze(1)
        return cls(ids, counts)

    def mean(self, columns: torch.Tensor) -> torch.Tensor:
        """Per-optimizee mean of ``columns`` (K, N) over its coordinates, broadcast back to (K, N)."""
        sums = torch.zeros(columns.shape[0], self.counts.shape[0], device=columns.device, dtype=columns.dtype)
        sums = sums.index_add(1, self.ids, columns)
        return (sums / self.counts.T.to(columns.dtype))[:, self.ids]


def per_optimizee_mean(segments: Segments | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Rows' means over their optimizee's coordinates: per segment, or over all rows without segments."""
    if segments is not None:
        return segments.mean
    return lambda columns: columns.mean(1, keepdim=True).expand_as(columns)


@dataclass(frozen=True)
class CoordinateState:
    """Everything the optimizer keeps per coordinate (the last dimension indexes coordinates)."""

    lstm: torch.Tensor  # (2·layers, hidden, N): h and c of each layer
    moments: torch.Tensor | None  # (len(momentum_decays) + 1, N): first moments, then v; None if unused
    memory: torch.Tensor | None = None  # (memory.rows, N): NTM-BFGS write history, then last reads

    def detach(self) -> CoordinateState:
        return CoordinateState(*(None if t is None else t.detach() for t in (self.lstm, self.moments, self.memory)))

    def split(self, sizes: list[int]) -> list[CoordinateState]:
        lstm = self.lstm.split(sizes, dim=2)
        moments = self.moments.split(sizes, dim=1) if self.moments is not None else [None] * len(sizes)
        memory = self.memory.split(sizes, dim=1) if self.memory is not None else [None] * len(sizes)
        return [CoordinateState(*parts) for parts in zip(lstm, moments, memory)]

    @staticmethod
    def cat(states: list[CoordinateState]) -> CoordinateState:
        lstm = torch.cat([s.lstm for s in states], dim=2)
        moments = None if states[0].moments is None else torch.cat([s.moments for s in states], dim=1)
        memory = None if states[0].memory is None else torch.cat([s.memory for s in states], dim=1)
        return CoordinateState(lstm, moments, memory)


#: Coordinates per chunk when stepping without a graph (evaluation, LearnedOptimizer.step):
#: a chunk's gates (4H × chunk floats) stay in a core's L2 cache.
NO_GRAD_CHUNK = 8_192


class CoordinateLSTM(nn.Module):
    """A stack of LSTM cells and a linear head, run on every coordinate independently.

    With kind 'ntm_bfgs' the stack is the controller of an :class:`OuterProductMemory`: the last
    step's reads join its input, and the head sees the last hidden state and this step's reads.
    """

    def __init__(self, config: OptimizerNetConfig) -> None:
        super().__init__()
        self.config = config
        reads = config.read_heads
        sizes = [config.num_features + reads] + [config.hidden_size] * config.num_layers
        self.cells = nn.ModuleList(nn.LSTMCell(sizes[i], sizes[i + 1]) for i in range(config.num_layers))
        self.head = nn.Linear(config.hidden_size + reads, config.num_outputs)
        if config.memory is not None:
            self.memory = OuterProductMemory(config.memory, config.hidden_size)
        # Start from small steps (or, for 'nominal', from the nominal hand-designed step), so an
        # untrained optimizer does not blow the optimizee up.
        nn.init.zeros_(self.head.bias)
        if config.update == "nominal":
            nn.init.zeros_(self.head.weight)  # exactly the nominal step until meta-training moves it
        else:
            nn.init.normal_(self.head.weight, std=0.01)
        if config.update == "nominal":
            self.log_lr = nn.Parameter(
                torch.tensor(math.log(config.nominal_lr)), requires_grad=config.learn_nominal_lr
            )

    def forward(
        self,
        features: torch.Tensor,
        lstm_state: torch.Tensor,
        segments: Segments | None,
        memory: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """features (F, N), state (2·layers, H, N), memory (rows, N) or None → head output
        (outputs, N), new state, new memory."""
        gac = self.config.gac_cells
        mean = per_optimizee_mean(segments)
        x = features
        if memory is not None:
            x = torch.cat((features, memory[self.config.memory.history_rows :]))  # the last step's reads
        new_state = []
        for layer, cell in enumerate(self.cells):
            h, c = lstm_cell(x, lstm_state[2 * layer], lstm_state[2 * layer + 1], cell)
            if gac:
                h = torch.cat((mean(h[:gac]), h[gac:]))
            new_state += [h, c]
            x = h
        if memory is not None:
            reads, memory = self.memory(x, memory, mean)
            x = torch.cat((x, reads))
        return torch.addmm(self.head.bias.unsqueeze(1), self.head.weight, x), torch.stack(new_state), memory

    def forward_(self, features: torch.Tensor, lstm_state: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` without a graph or averaging cells: ``lstm_state`` (float32) is updated in place."""
        x = features
        for layer, cell in enumerate(self.cells):
            h, c = lstm_state[2 * layer], lstm_state[2 * layer + 1]
            lstm_cell_(x, h, c, cell.weight_ih, cell.weight_hh, cell.bias_ih + cell.bias_hh)
            x = h
        return torch.addmm(self.head.bias.unsqueeze(1), self.head.weight, x)


class LSTMOptimizerNet(nn.Module):
    """One :class:`CoordinateLSTM` per parameter group (a single one unless groups are set)."""

    def __init__(self, config: OptimizerNetConfig) -> None:
        super().__init__()
        self.config = config
        self.nets = nn.ModuleDict({name: CoordinateLSTM(config) for name in config.group_names})
        # Built once and moved with the net; not persistent, so state dicts stay the paper's.
        decays = torch.tensor([*config.momentum_decays, config.rms_decay]).unsqueeze(1)
        self.register_buffer("moment_decays", decays, persistent=False)

    @property
    def lstm_state_dtype(self) -> torch.dtype:
        """How h and c are stored between steps without a graph (``config.state_dtype``)."""
        return STATE_DTYPES[self.config.state_dtype]

    def initial_state(self, rows: int, device: torch.device | str) -> CoordinateState:
        config = self.config
        if config.memory is not None:
            check_memory_size(config.memory, rows)  # before allocating anything
        lstm = torch.zeros(
            2 * config.num_layers, config.hidden_size, rows, device=device, dtype=self.lstm_state_dtype
        )
        # Moments stay float32 whatever state_dtype says: they are slow running averages, and
        # bfloat16's 8-bit mantissa would round away increments of (1 − 0.999)·g².
        moments = torch.zeros(len(config.momentum_decays) + 1, rows, device=device) if config.uses_moments else None
        # The memory stays float32 too: its reads sum slots × heads products of it.
        memory = None if config.memory is None else torch.zeros(config.memory.rows, rows, device=device)
        return CoordinateState(lstm, moments, memory)

    def state_bytes_per_coordinate(self) -> int:
        state = self.initial_state(1, "cpu")
        return sum(t.element_size() * t.numel() for t in (state.lstm, state.moments, state.memory) if t is not None)

    def features(
        self,
        grad: torch.Tensor,
        moments: torch.Tensor | None,
        steps: torch.Tensor,
        param: torch.Tensor | None,
        loss_rows: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Network input (F, N), new moments, and the nominal direction and its unit (or None)."""
        config = self.config
        columns: list[torch.Tensor] = []
        nominal = None
        if config.gradient_input:
            columns.append(gradient_features(grad, config))
        if moments is not None:
            decays = self.moment_decays.to(grad.dtype)
            moments = update_moments(moments, grad, decays)
            momentum, normalized_grad, rms = normalized_moments(moments, grad, steps + 1, decays, config.epsilon)
            if config.momentum_decays:
                columns.append(momentum)
                nominal = self._nominal(moments, momentum, grad, rms)
            if config.normalized_gradient:
                columns.append(normalized_grad.unsqueeze(0))
        if config.param_input:
            if param is None:
                raise ValueError("this optimizer was trained with param_input: it needs the parameter values")
            columns.append(param.detach().unsqueeze(0).to(grad.dtype))
        if config.progress_horizon is not None:
            columns.append((steps.to(grad.dtype) / config.progress_horizon).expand(grad.shape[0]).unsqueeze(0))
        if config.loss_input:
            if loss_rows is None:
                raise ValueError("this optimizer was trained with loss_input: it needs the loss at each step")
            columns.append(loss_rows.unsqueeze(0).to(grad.dtype))
        return torch.cat(columns), moments, nominal

    def _nominal(
        self, moments: torch.Tensor, momentum: torch.Tensor, grad: torch.Tensor, rms: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | float]:
        """The nominal direction and the unit of its learned correction."""
        config = self.config
        if config.nominal == "adam":
            return momentum[0], 1.0
        # torch's momentum buffer b_t = μ b_{t-1} + g_t is the running mean m over (1 − μ).
        mu = config.momentum_decays[0]
        return grad + mu / (1 - mu) * moments[0], rms

    def forward(
        self,
        group: str,
        grad: torch.Tensor,
        state: CoordinateState,
        *,
        steps: torch.Tensor | int = 0,
        param: torch.Tensor | None = None,
        loss_rows: torch.Tensor | None = None,
        segments: Segments | None = None,
    ) -> tuple[torch.Tensor, CoordinateState]:
        """One step for the coordinates of ``group``: (N,) gradient → (N,) update, new state.

        ``steps`` counts the steps each row has already taken (a scalar or (N,)); ``param`` (N,)
        is needed with param_input, ``loss_rows`` (N,) (each row's loss feature) with loss_input.
        The update is added to the parameters: θ ← θ + update.
        """
        grad = grad.detach()
        steps = torch.as_tensor(steps, device=grad.device)
        if self.config.memory is not None:
            if state.memory is None:
                raise ValueError("this NTM-BFGS optimizer needs its memory in the state: start from initial_state()")
            check_memory_size(self.config.memory, grad.shape[0])
        features, moments, nominal = self.features(grad, state.moments, steps, param, loss_rows)
        net = self.nets[group]
        # bfloat16 storage: compute in float32
        out, lstm, memory = net(features, state.lstm.float(), segments, state.memory)
        return self._update(net, out, nominal), CoordinateState(lstm, moments, memory)

    @torch.no_grad()
    def step_(
        self,
        group: str,
        grad: torch.Tensor,
        state: CoordinateState,
        *,
        steps: torch.Tensor | int = 0,
        param: torch.Tensor | None = None,
        loss_rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`forward` without a graph, updating ``state`` in place: returns the (N,) update.

        Coordinates are independent here, so they run in cache-sized chunks, each writing its
        new state over the old: no per-step allocation of the state and no concatenation.
        (Averaging cells and NTM-BFGS's memory reads couple coordinates: use :meth:`forward` for those.)
        """
        if self.config.couples_coordinates:
            raise ValueError(
                "step_ runs coordinates in chunks; averaging cells and NTM-BFGS's memory need forward()"
            )
        grad = grad.detach()
        steps = torch.as_tensor(steps, device=grad.device)
        net = self.nets[group]
        update = torch.empty_like(grad, dtype=torch.float32)
        coordinates = grad.shape[0]
        chunk = -(-coordinates // max(1, coordinates // NO_GRAD_CHUNK))  # equal chunks, no small remainder
        for start in range(0, coordinates, chunk):
            rows = slice(start, start + chunk)
            lstm = state.lstm[:, :, rows]
            work = lstm if lstm.dtype == torch.float32 else lstm.float()
            moments = None if state.moments is None else state.moments[:, rows]
            features, new_moments, nominal = self.features(
                grad[rows].float(),
                moments,
                steps if steps.dim() == 0 else steps[rows],
                None if param is None else param[rows],
                None if loss_rows is None else loss_rows[rows],
            )
            if moments is not None:
                moments.copy_(new_moments)
            update[rows] = self._update(net, net.forward_(features, work), nominal)
            if work is not lstm:
                lstm.copy_(work)
        return update

    def _update(
        self, net: CoordinateLSTM, out: torch.Tensor, nominal: tuple[torch.Tensor, torch.Tensor | float] | None
    ) -> torch.Tensor:
        """The head's output (outputs, N) → the (N,) update, by the configured rule."""
        config = self.config
        if config.update == "linear":
            return out[0] * config.output_scale
        if config.update == "tanh":
            return torch.tanh(out[0]) * config.output_scale
        direction, unit = nominal
        magnitude = torch.exp(net.log_lr + config.magnitude_scale * out[1])
        return -magnitude * (direction + config.output_scale * out[0] * unit)
