"""Data-parallel meta-training over torch.distributed: ranks, collectives and launching them.

One rank is the plain single-process run; every helper here is a no-op then. With several
ranks (torchrun, ``l2l meta-train --nproc N``, or the service's ``ranks``), each takes its own
share of every meta-batch's training seeds, the meta-gradients are averaged with one
all-reduce, and rank 0 alone writes (checkpoints, files, MLflow).
"""

from l2l_plugin.training.distributed.collectives import (
    agree,
    average_meta_gradient,
    broadcast_object,
    gather_rows,
    shard,
    shard_bounds,
)
from l2l_plugin.training.distributed.group import (
    Ranks,
    current_ranks,
    launched_as_rank,
    process_group,
    process_group_from_env,
)

__all__ = [
    "Ranks",
    "agree",
    "average_meta_gradient",
    "broadcast_object",
    "current_ranks",
    "gather_rows",
    "launched_as_rank",
    "process_group",
    "process_group_from_env",
    "shard",
    "shard_bounds",
]
