"""Start the ranks of ``l2l meta-train … --nproc N`` through torchrun's own API.

The launcher process runs torchrun's elastic agent (``torch.distributed.run``): it starts the
ranks as ``python -m l2l_plugin.cli`` with the same arguments, restarts the whole group when a
rank dies (``--max-restarts``), and each rank resumes from the run's checkpoint. A rank knows
it is one from torchrun's environment (:func:`~l2l_plugin.training.distributed.group.launched_as_rank`),
so ``torchrun --nproc-per-node N -m l2l_plugin.cli meta-train …`` runs the very same code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from l2l_plugin.errors import UsageError
from l2l_plugin.training.distributed.group import launched_as_rank

ENTRY_MODULE = "l2l_plugin.cli"


class LaunchError(UsageError, ValueError):
    """Launch options that cannot work together (the message says which)."""


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scaling out (torchrun)")
    group.add_argument(
        "--nproc", type=int, default=1, metavar="N",
        help="ranks on this machine (data-parallel meta-training; meta_batch_size is per rank)",
    )
    group.add_argument(
        "--nnodes", default="1", metavar="N|MIN:MAX",
        help="machines taking part; more than one needs --rdzv-endpoint (the same on every machine)",
    )
    group.add_argument(
        "--max-restarts", type=int, default=0, metavar="K",
        help="restart the whole group up to K times when a rank fails; it resumes from the checkpoint",
    )
    group.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous of a multi-machine run")
    group.add_argument("--rdzv-id", default="l2l", metavar="ID", help="the run's id at the rendezvous")


def wants_launch(args: argparse.Namespace) -> bool:
    """True in the process the user started with --nproc/--nnodes (not inside a rank)."""
    if launched_as_rank():
        return False
    return args.nproc > 1 or args.nnodes != "1" or args.rdzv_endpoint is not None or args.max_restarts > 0


def torchrun_arguments(args: argparse.Namespace) -> list[str]:
    """torchrun's own options for what ``args`` asks, up to the module the ranks run."""
    if args.nproc < 1:
        raise LaunchError(f"--nproc must be at least 1, got {args.nproc}")
    if args.max_restarts < 0:
        raise LaunchError(f"--max-restarts must be at least 0, got {args.max_restarts}")
    options = [f"--nproc-per-node={args.nproc}", f"--nnodes={args.nnodes}", f"--max-restarts={args.max_restarts}"]
    if args.rdzv_endpoint is None:
        if args.nnodes != "1":
            raise LaunchError("--nnodes other than 1 needs --rdzv-endpoint HOST:PORT (the same on every machine)")
        options.append("--standalone")  # a rendezvous on a free local port
    else:
        options += ["--rdzv-backend=c10d", f"--rdzv-endpoint={args.rdzv_endpoint}", f"--rdzv-id={args.rdzv_id}"]
    return [*options, "-m", ENTRY_MODULE]


def launch(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run ``argv`` on the ranks ``args`` asks for; the exit code is 0 when every rank succeeded."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun would set it (and say so) anyway; cpu_threads sets each rank's real count.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = get_args_parser().parse_args(torchrun_arguments(args))
    # Set after parsing: torchrun's parser would take `--nproc` in them for its own option.
    config.training_script_args = list(argv)
    try:
        run(config)
    except ChildFailedError as exc:
        failures = "; ".join(f"rank {rank}: exit code {failure.exitcode}" for rank, failure in exc.failures.items())
        print(f"l2l: meta-training failed on {failures} (each rank's error is above)", file=sys.stderr)
        return 1
    return 0
