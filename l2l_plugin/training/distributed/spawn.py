"""The service's ranks: the worker process is rank 0, the others are ``l2l meta-train`` children.

Rank 0 stays in the worker, so the job's progress, cancellation and MLflow run work exactly as
with one rank (rank 0's callbacks decide, and :func:`~.collectives.agree` tells the others).
The other ranks are the same command a user runs under torchrun, given torchrun's variables.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from l2l_plugin.training.distributed.group import Ranks, process_group
from l2l_plugin.training.distributed.launch import ENTRY_MODULE

# Ranks that finished their share wait at most this long for rank 0 to finish its own.
_EXIT_SECONDS = 60.0
# Starting a rank (importing torch and the families) takes seconds; this is the rendezvous limit.
_JOIN_TIMEOUT = dt.timedelta(minutes=5)


def meta_train_arguments(
    family: str, family_config: Mapping[str, Any] | None, meta_overrides: Mapping[str, Any] | None, out_dir: Path
) -> list[str]:
    """``l2l meta-train`` arguments that train what ``meta_train_and_evaluate`` gets (quietly)."""
    arguments = ["meta-train", family, "--out", str(out_dir), "--quiet"]
    for flag, values in (("--set", family_config or {}), ("--meta", meta_overrides or {})):
        for key, value in values.items():
            arguments += [flag, f"{key}={json.dumps(value)}"]
    return arguments


@contextlib.contextmanager
def local_ranks(world_size: int, arguments: Sequence[str]) -> Iterator[Ranks]:
    """This process as rank 0 of ``world_size`` for a block; ranks 1… run ``l2l`` ``arguments``.

    When the block ends, normally or not, the group is left and every child is gone: children
    that are still waiting in a collective (rank 0 stopped early) are killed.
    """
    if world_size <= 1:
        yield Ranks()
        return
    # On a free port; not waiting for the ranks here: they are started below.
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, timeout=_JOIN_TIMEOUT, wait_for_workers=False)
    children: list[subprocess.Popen[bytes]] = []
    try:
        for rank in range(1, world_size):
            env = {
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": str(world_size),
                "LOCAL_WORLD_SIZE": str(world_size),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(store.port),
            }
            env.setdefault("OMP_NUM_THREADS", "1")
            children.append(
                subprocess.Popen([sys.executable, "-m", ENTRY_MODULE, *arguments], env=env, stdin=subprocess.DEVNULL)
            )
        with process_group(store, 0, world_size) as ranks:
            yield ranks
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):  # rank 0's result is complete already
                child.wait(timeout=_EXIT_SECONDS)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.wait()
