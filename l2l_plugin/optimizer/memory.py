"""NTM-BFGS's outer-product memory, kept as a sliding history of write vectors (coordinatewise storage).

Andrychowicz et al. 2016 (appendix B) write BFGS as ``g = read(M, ·)``, ``M ← write(M, ·)`` with M
the inverse-Hessian estimate, keep that structure (a read is a matrix-vector product, a write a
low-rank update) and let a coordinatewise controller emit the vectors. M is n×n over the
optimizee's n coordinates; like L-BFGS (the paper's NTM-L-BFGS) we keep only the last ``slots``
pairs (a, b) of left and right write vectors, so per coordinate the memory is
``slots × write_heads × 2`` numbers plus the last read of each head, and a read

    M r = Σ_j a_j ⟨b_j, r⟩

costs O(n × slots × heads). The inner products are the only coupling between coordinates: one
per kept vector and read head, summed over one optimizee's coordinates (per task with
``Segments``, the way global averaging cells average).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from l2l_plugin.optimizer.config import MAX_MEMORY_FLOATS, MemoryConfig


class MemoryTooLargeError(ValueError):
    """The memory of this many coordinates would exceed ``MAX_MEMORY_FLOATS``."""


def check_memory_size(config: MemoryConfig, coordinates: int) -> None:
    floats = coordinates * config.rows
    if floats > MAX_MEMORY_FLOATS:
        most = MAX_MEMORY_FLOATS // config.rows
        raise MemoryTooLargeError(
            f"NTM-BFGS memory for {coordinates:,} coordinates × {config.rows} rows "
            f"(slots {config.slots} × write heads {config.write_heads} × 2 + read heads {config.read_heads}) "
            f"is {floats:,} floats, over the cap of {MAX_MEMORY_FLOATS:,}: at most {most:,} coordinates "
            "in one call with this memory; use fewer memory.slots or heads, or parameter groups"
        )


class OuterProductMemory(nn.Module):
    """The read and write heads: a linear map from the controller's last hidden state to the
    write vectors a, b (per write head) and the read keys r (per read head), each squashed by
    tanh so that one read is bounded by slots × write heads whatever the controller emits."""

    def __init__(self, config: MemoryConfig, hidden_size: int) -> None:
        super().__init__()
        self.config = config
        self.interface = nn.Linear(hidden_size, 2 * config.write_heads + config.read_heads)

    def forward(
        self, hidden: torch.Tensor, memory: torch.Tensor, mean: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (H, N), memory (rows, N) → this step's reads (read heads, N), new memory.

        ``mean`` maps (K, N) to each row's mean over its optimizee's coordinates, broadcast back.
        Writes first, then reads, so a read already sees this step's outer product.
        """
        config = self.config
        vectors = torch.tanh(torch.addmm(self.interface.bias.unsqueeze(1), self.interface.weight, hidden))
        written = vectors[: 2 * config.write_heads]  # a of every head, then b of every head
        keys = vectors[2 * config.write_heads :]
        history = memory[: config.history_rows].reshape(config.slots, 2 * config.write_heads, -1)
        history = torch.cat((history[1:], written.unsqueeze(0)))  # the oldest slot drops out
        left, right = history.chunk(2, dim=1)  # (slots, write heads, N) each
        left = left.reshape(-1, left.shape[-1])
        right = right.reshape(-1, right.shape[-1])
        # ⟨b_j, r_k⟩ for every kept vector j and read head k: one per-optimizee mean of products.
        products = (right.unsqueeze(1) * keys.unsqueeze(0)).reshape(-1, keys.shape[-1])
        inner = mean(products).view(right.shape[0], keys.shape[0], -1)  # (kept, read heads, N)
        reads = (left.unsqueeze(1) * inner).sum(0) * config.read_scale  # (read heads, N)
        return reads, torch.cat((history.reshape(config.history_rows, -1), reads))

