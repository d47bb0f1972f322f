"""The coordinatewise LSTM: one small network applied to every coordinate of the optimizee.

Coordinates are rows of a batch, so the weights are shared and the state is per coordinate.
Several optimizees (a meta-batch of tasks) may share one call: ``segments`` says which rows
belong to which optimizee, so global averaging cells and the loss input stay per optimizee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from l2l_plugin.optimizer.config import OptimizerNetConfig


@dataclass(frozen=True)
class Segments:
    """Rows → optimizee index, for per-optimizee averages over a batch of coordinates."""

    ids: torch.Tensor  # (N,) int64
    counts: torch.Tensor  # (S, 1) float, rows per optimizee

    @classmethod
    def from_ids(cls, ids: torch.Tensor, count: int) -> Segments:
        counts = torch.bincount(ids, minlength=count).to(torch.float32).clamp_min(1).unsqueeze(1)
        return cls(ids, counts)

    def mean(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-optimizee mean of ``rows`` (N, K), broadcast back to (N, K)."""
        sums = torch.zeros(self.counts.shape[0], rows.shape[1], device=rows.device, dtype=rows.dtype)
        sums = sums.index_add(0, self.ids, rows)
        return (sums / self.counts.to(rows.dtype))[self.ids]


def gradient_features(grad: torch.Tensor, config: OptimizerNetConfig) -> torch.Tensor:
    """(N,) gradient → (N, 1 or 2) network input (paper appendix A when preprocess_p is set)."""
    if config.preprocess_p is None:
        return (grad * config.input_scale).unsqueeze(1)
    p = config.preprocess_p
    magnitude = grad.abs()
    large = magnitude >= math.exp(-p)
    log_part = torch.where(large, torch.log(magnitude.clamp_min(math.exp(-p))) / p, -torch.ones_like(grad))
    sign_part = torch.where(large, torch.sign(grad), grad * math.exp(p))
    return torch.stack((log_part, sign_part), dim=1)


def loss_feature(loss: torch.Tensor, config: OptimizerNetConfig) -> torch.Tensor:
    """log(loss) / scale, the optional extra input (computed per optimizee, detached)."""
    return torch.log(loss.detach().clamp_min(1e-30)) / config.loss_input_scale


class CoordinateLSTM(nn.Module):
    """A stack of LSTM cells and a linear head, run on every coordinate independently."""

    def __init__(self, config: OptimizerNetConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [config.num_features] + [config.hidden_size] * config.num_layers
        self.cells = nn.ModuleList(nn.LSTMCell(sizes[i], sizes[i + 1]) for i in range(config.num_layers))
        self.head = nn.Linear(config.hidden_size, 1)
        # Start from small steps, so an untrained optimizer does not blow the optimizee up.
        nn.init.zeros_(self.head.bias)
        nn.init.normal_(self.head.weight, std=0.01)

    def forward(
        self, features: torch.Tensor, state: torch.Tensor, segments: Segments | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, F), state (2·layers, N, H) → update (N,), new state."""
        gac = self.config.gac_cells
        x = features
        new_state = []
        for layer, cell in enumerate(self.cells):
            h, c = cell(x, (state[2 * layer], state[2 * layer + 1]))
            if gac:
                averaged = segments.mean(h[:, :gac]) if segments else h[:, :gac].mean(0, keepdim=True).expand(
                    h.shape[0], gac
                )
                h = torch.cat((averaged, h[:, gac:]), dim=1)
            new_state += [h, c]
            x = h
        update = self.head(x).squeeze(1) * self.config.output_scale
        return update, torch.stack(new_state)


class LSTMOptimizerNet(nn.Module):
    """One :class:`CoordinateLSTM` per parameter group (a single one unless groups are set)."""

    def __init__(self, config: OptimizerNetConfig) -> None:
        super().__init__()
        self.config = config
        self.nets = nn.ModuleDict({name: CoordinateLSTM(config) for name in config.group_names})

    def initial_state(self, rows: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.zeros(2 * self.config.num_layers, rows, self.config.hidden_size, device=device, dtype=dtype)

    def forward(
        self,
        group: str,
        grad: torch.Tensor,
        state: torch.Tensor,
        loss_rows: torch.Tensor | None = None,
        segments: Segments | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for the coordinates of ``group``: (N,) gradient → (N,) update, new state.

        ``loss_rows`` (N,) is each row's optimizee loss feature, required when loss_input is on.
        """
        features = gradient_features(grad.detach(), self.config)
        if self.config.loss_input:
            if loss_rows is None:
                raise ValueError("this optimizer was trained with loss_input: it needs the loss at each step")
            features = torch.cat((features, loss_rows.unsqueeze(1).to(features.dtype)), dim=1)
        return self.nets[group](features, state, segments)
