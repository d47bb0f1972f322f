"""Which rank this process is, and joining the process group that torchrun (or the service) describes."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

# How long a rank waits in a collective for the others. Rank 0 alone writes checkpoints and
# talks to MLflow between collectives, which takes seconds, never this long; a rank that died
# is noticed at once by gloo/NCCL (the connection closes), so this is only a last resort.
COLLECTIVE_TIMEOUT = dt.timedelta(minutes=30)

# What torchrun sets for every rank; the service's helper ranks get the same.
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the group: rank ``rank`` of ``world_size``."""

    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the only one that validates into history, checkpoints, logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def current_ranks() -> Ranks:
    """The initialised process group's ranks; one rank of one when there is none."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def launched_as_rank() -> bool:
    """True inside a process started by torchrun (or as one of the service's ranks)."""
    return all(name in os.environ for name in _LAUNCH_VARIABLES)


def backend() -> str:
    """gloo for CPU tensors, plus NCCL for CUDA tensors where CUDA is present."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def _use_local_gpu() -> None:
    # torch.device("cuda") (the `auto` device) then means this rank's own GPU.
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local % torch.cuda.device_count())


def _env_store(rank: int, world_size: int) -> dist.Store:
    """The store torchrun's variables name: its agent's, or one rank 0 hosts when there is none."""
    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    return dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        world_size,
        is_master=rank == 0 and not agent_hosts_it,
        timeout=COLLECTIVE_TIMEOUT,
        multi_tenant=True,
    )


@contextlib.contextmanager
def process_group_from_env() -> Iterator[Ranks]:
    """Join the group described by torchrun's environment for a block; a no-op outside torchrun.

    A group that is already initialised (the caller made one) is used as it is and left alone.
    """
    if not launched_as_rank() or dist.is_initialized():
        yield current_ranks()
        return
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    with process_group(_env_store(rank, world_size), rank, world_size) as ranks:
        yield ranks


@contextlib.contextmanager
def process_group(store: dist.Store, rank: int, world_size: int) -> Iterator[Ranks]:
    """Join a group through ``store`` for a block (the service's rank 0 passes the one it hosts).

    The group's keys carry the restart attempt: torchrun's agent keeps one store across
    restarts of the group, and without the prefix the restarted ranks would read the dead
    ranks' gloo addresses and never connect.
    """
    _use_local_gpu()
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        backend(),
        store=dist.PrefixStore(f"l2l/attempt_{attempt}", store),
        rank=rank,
        world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        yield current_ranks()
    finally:
        dist.destroy_process_group()
