"""The few collectives data-parallel meta-training needs, each a no-op on one rank.

Every function here is called by every rank at the same point of the run (that is what a
collective is): a rank that skipped one would leave the others waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from l2l_plugin.training.distributed.group import Ranks, current_ranks

T = TypeVar("T")


def shard_bounds(count: int, ranks: Ranks | None = None) -> tuple[int, int]:
    """``[start, stop)`` of this rank's contiguous share of ``count`` items.

    Contiguous shares concatenated in rank order give back the original order, so gathered
    results line up with the seeds; the first ``count % world_size`` ranks take one more.
    """
    ranks = ranks or current_ranks()
    base, extra = divmod(count, ranks.world_size)
    start = ranks.rank * base + min(ranks.rank, extra)
    return start, start + base + int(ranks.rank < extra)


def shard(items: Sequence[T], ranks: Ranks | None = None) -> list[T]:
    start, stop = shard_bounds(len(items), ranks)
    return list(items[start:stop])


def gather_rows(local: torch.Tensor | None, dim: int, ranks: Ranks | None = None) -> torch.Tensor | None:
    """Every rank's share of a result (``None``: an empty share), concatenated along ``dim`` in
    rank order, on every rank (so each can take the same decisions from it)."""
    ranks = ranks or current_ranks()
    if not ranks.distributed:
        return local
    parts: list[Any] = [None] * ranks.world_size
    dist.all_gather_object(parts, None if local is None else local.detach().cpu())
    present = [part for part in parts if part is not None]
    return torch.cat(present, dim=dim) if present else None


def broadcast_object(value: T, ranks: Ranks | None = None) -> T:
    """Rank 0's ``value`` on every rank (pickled: for rare, small things such as a checkpoint)."""
    ranks = ranks or current_ranks()
    if not ranks.distributed:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(values: Sequence[float], ranks: Ranks | None = None) -> list[float]:
    """Rank 0's ``values`` on every rank: decisions that depend on rank 0's clock or callbacks
    (cancellation, the time budget, the budget-driven schedules) are taken once, by rank 0."""
    ranks = ranks or current_ranks()
    if not ranks.distributed:
        return list(values)
    tensor = torch.tensor(list(values), dtype=torch.float64)  # CPU: gloo, even beside NCCL
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def average_meta_gradient(
    parameters: Sequence[torch.Tensor], finite: bool, meta_loss: float | None, ranks: Ranks | None = None
) -> tuple[bool, float | None]:
    """Replace every rank's ``.grad`` with the ranks' mean meta-gradient, in one all-reduce.

    Every rank's meta-loss is the mean over its own equal share of the meta-batch, so the mean
    over ranks is the gradient of the mean over the whole meta-batch: what one rank with all
    the tasks computes. ``finite`` says whether this rank's meta-loss and gradient are finite;
    one non-finite rank makes the step non-finite everywhere (returns False, grads cleared), so
    every rank skips it. Returns (finite everywhere, the ranks' mean meta-loss).

    A parameter without a gradient on every rank keeps ``grad = None`` (Adam then leaves it and
    its moments alone, as on one rank).
    """
    ranks = ranks or current_ranks()
    if not ranks.distributed:
        return finite, meta_loss if finite else None
    device = parameters[0].device
    dtype = parameters[0].dtype
    local = [finite and p.grad is not None for p in parameters]
    header = torch.tensor(
        [0.0 if finite else 1.0, float(meta_loss) if finite and meta_loss is not None else 0.0]
        + [float(has) for has in local],
        device=device,
        dtype=dtype,
    )
    grads = [
        p.grad.detach().reshape(-1) if has else torch.zeros(p.numel(), device=device, dtype=dtype)  # type: ignore[union-attr]
        for p, has in zip(parameters, local)
    ]
    flat = torch.cat([header, *grads])
    dist.all_reduce(flat)  # a sum; gloo and NCCL hand every rank the same bits
    head = flat[: len(header)].tolist()
    nonfinite, loss_sum, with_grad = head[0], head[1], head[2:]
    if nonfinite > 0 or not torch.isfinite(flat).all():
        for p in parameters:
            p.grad = None
        return False, None
    offset = len(header)
    for p, count in zip(parameters, with_grad):
        chunk = flat[offset : offset + p.numel()]
        offset += p.numel()
        p.grad = (chunk / ranks.world_size).view_as(p).clone() if count > 0 else None
    return True, loss_sum / ranks.world_size
