"""How many intra-op threads a run uses on CPU: a fixed count, torch's own, or one picked from the problem size."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from l2l_plugin.families import TaskFamily

AUTO: Literal["auto"] = "auto"

#: Coordinates (all tasks of a meta-batch, or of an evaluation stack) per extra thread. Below it a
#: second thread costs more in synchronisation than it saves (benchmarks/meta_iteration.py --threads).
COORDINATES_PER_THREAD = 200_000


def available_cores() -> int:
    """Cores this process may run on, shared among the local ranks of a distributed run."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, cores // max(1, local_ranks))


def auto_threads(coordinates: int | None) -> int:
    """Threads for a problem of ``coordinates``: one per COORDINATES_PER_THREAD, within the cores.

    ``L2L_MAX_CPU_THREADS`` caps it (a service sets it for its workers). Unknown size: one thread.
    """
    if coordinates is None:
        return 1
    cap = int(os.environ.get("L2L_MAX_CPU_THREADS", "0") or 0) or available_cores()
    return max(1, min(available_cores(), cap, coordinates // COORDINATES_PER_THREAD))


@contextlib.contextmanager
def cpu_threads(count: int | Literal["auto"] | None, coordinates: int | None = None) -> Iterator[None]:
    """Set torch's intra-op thread count for a block, then restore it.

    ``count``: a number, ``"auto"`` (from ``coordinates``, see :func:`auto_threads`) or None
    (leave torch's setting).
    """
    previous = torch.get_num_threads()
    threads = auto_threads(coordinates) if count == AUTO else count
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def task_coordinates(family: TaskFamily) -> int:
    """Parameters of one task of ``family`` (the problem size the thread count follows).

    From the family's declared cost when it has one (nothing sampled); else from a sampled task.
    """
    if (cost := family.cost()) is not None:
        return cost.coordinates
    params = family.sample_stack([0]).init_params("cpu")
    return sum(value[0].numel() for value in params.values())
