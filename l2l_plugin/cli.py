"""The ``l2l`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import entrypoints
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from l2l_plugin.errors import L2LError
from l2l_plugin.evaluation import EvaluationReport
from l2l_plugin.families import TaskFamily, discover_families, get_family, make_family
from l2l_plugin.pipeline import (
    PHASE_EVALUATING,
    PHASE_META_TRAINING,
    MetaTrainOutcome,
    PhaseHook,
    PhaseProgress,
    evaluate_trained,
    meta_train_and_evaluate,
    resolve_meta_train_config,
    write_evaluation,
)
from l2l_plugin.text import table
from l2l_plugin.training import MetaTrainCallback, MetaTrainProgress, MetaTrainResult, TqdmProgress
from l2l_plugin.training.distributed import current_ranks, launched_as_rank, process_group_from_env
from l2l_plugin.training.distributed.launch import LaunchError, add_launch_arguments, launch, wants_launch
from l2l_plugin.training.presets import LIBRARY_DEFAULT_PRESET

CLI_EXTENSION_GROUP = "l2l_plugin.cli"


def _families_table() -> str:
    rows = [("NAME", "DISTRIBUTION", "DESCRIPTION", "STATUS")]
    for entry in discover_families().values():
        status = "ok" if entry.error is None else f"error: {entry.error}"
        rows.append((entry.name, entry.distribution or "-", entry.description, status))
    return table(rows)


def _families_json() -> str:
    listing = [
        {
            "name": entry.name,
            "distribution": entry.distribution,
            "target": entry.target,
            "description": entry.description,
            "schema": entry.schema(),
            "error": entry.error,
        }
        for entry in discover_families().values()
    ]
    return json.dumps(listing, indent=2)


def _family_show(name: str) -> str:
    family = get_family(name)
    meta_defaults = to_jsonable_python(family.meta_train_defaults)
    return json.dumps(
        {
            "name": name,
            "description": family.description(),
            "defaults": family().model_dump(mode="json"),
            # Beneath `--meta` overrides, on top of the preset they name (the library's when none).
            "meta_train_defaults": meta_defaults,
            "meta_train_preset": meta_defaults.get("preset", LIBRARY_DEFAULT_PRESET),
            # Narrows `l2l meta-train --search` (the registry's recipe search) for this family.
            "meta_train_search_hints": to_jsonable_python(family.meta_train_search_hints),
            "schema": family.model_json_schema(),
        },
        indent=2,
    )


def cmd_families(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            raise SystemExit("usage: l2l families show NAME")
        print(_family_show(args.name))
    else:
        print(_families_json() if args.json else _families_table())
    return 0


def parse_assignments(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a.b=3", "c=sigmoid"]`` → ``{"a": {"b": 3}, "c": "sigmoid"}`` (values parsed as JSON when they are)."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected key=value, got {pair!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = result
        *parents, leaf = key.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return result


def _print_report(report: EvaluationReport) -> None:
    print(f"\n{report.family}: {len(report.test_seeds)} held-out tasks, {report.steps} steps")
    print(f"{'optimizer':<10} {'lr':>9} {'final mean':>12} {'median':>12} {'geomean':>12} {'loss sum':>12}")
    for name, result in report.optimizers.items():
        lr = f"{result.lr:.3g}" if result.lr is not None else "-"
        print(
            f"{name:<10} {lr:>9} {result.final_loss_mean:>12.4g} {result.final_loss_median:>12.4g} "
            f"{result.final_loss_geomean:>12.4g} {result.loss_sum_mean:>12.4g}"
        )
    print(
        f"win rate vs best baseline ({report.best_baseline}): {report.win_rate_vs_best_baseline:.0%}; "
        f"beats every baseline: {report.beats_every_baseline}"
    )


class _MetaTrainingBar(TqdmProgress):
    """TqdmProgress labelled with the phase's name."""

    def __init__(self, total: int, quiet: bool) -> None:
        super().__init__(total, disable=quiet, delay=0.01)  # first drawn once the label below is set
        self.bar.set_description(PHASE_META_TRAINING, refresh=False)
        self.quiet = quiet
        self.first = True

    def on_iteration(self, progress: MetaTrainProgress) -> None:
        if self.first and progress.iteration > 1 and not self.quiet:
            # A restarted run (the same command again, or torchrun's --max-restarts) says so.
            self.bar.write(f"resumed from the checkpoint at meta-iteration {progress.iteration - 1}", file=sys.stderr)
        self.first = False
        super().on_iteration(progress)

    def on_end(self, outcome: MetaTrainResult | BaseException) -> None:
        if not self.quiet:
            # Drawn at least once: a run shorter than the bar's redraw interval still shows its end.
            self.bar.refresh()
        super().on_end(outcome)


class PhaseDisplay:
    """The run's phases on the terminal: a meta-training bar, then an evaluation bar (optimizers
    done / total), then a line per later phase (the registry's publishing)."""

    def __init__(self, total_iterations: int | None, quiet: bool = False, also: PhaseHook | None = None) -> None:
        """``total_iterations`` None: no meta-training (``l2l evaluate``), no bar for it."""
        self.quiet = quiet
        self.also = also
        self.training = _MetaTrainingBar(total_iterations, quiet) if total_iterations is not None else None
        self.evaluation: Any = None

    def __call__(self, progress: PhaseProgress) -> None:
        if self.also is not None:
            self.also(progress)
        if progress.phase == PHASE_META_TRAINING:
            return  # its bar closes itself when meta-training ends (TqdmProgress.on_end)
        if progress.phase == PHASE_EVALUATING:
            if self.evaluation is None:
                from tqdm.auto import tqdm

                self.evaluation = tqdm(
                    total=progress.total, desc=PHASE_EVALUATING, unit="optimizer", disable=self.quiet, mininterval=0
                )
            self.evaluation.update((progress.done or 0) - self.evaluation.n)
            return
        self.close()
        if not self.quiet:
            print(f"{progress.describe()} …", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Every bar closed, also one whose phase never began (e.g. a config refused first)."""
        if self.training is not None:
            self.training.close()
        if self.evaluation is not None:
            self.evaluation.close()


def stop_summary(outcome: MetaTrainOutcome) -> str:
    """One line: why meta-training stopped, and how far it got."""
    provenance = outcome.trained.manifest.provenance
    done = provenance.meta_iterations
    total = outcome.iterations_total
    of = f"{done} of {total}" if total is not None else f"{done}"
    budget = outcome.trained.manifest.meta_training.get("max_seconds")
    limit = f"; max_seconds={budget:g}" if outcome.stop_reason == "time budget" and budget else ""
    seconds = f" in {provenance.meta_train_seconds:.0f} s" if provenance.meta_train_seconds is not None else ""
    return (
        f"stop reason: {outcome.stop_reason} ({of} meta-iterations{seconds}{limit}; "
        f"best weights from iteration {provenance.best_iteration})"
    )


#: Meta-train, evaluate, write the files: ``meta_train_and_evaluate``'s arguments (family name,
#: the family validated, overrides, out_dir, callbacks, on_phase). The registry's publish path
#: takes one; the CLI's shows progress, the service's launches ranks.
Trainer = Callable[
    [str, TaskFamily, Mapping[str, Any] | None, Path | str, Sequence[MetaTrainCallback], PhaseHook | None],
    MetaTrainOutcome,
]


def trainer_on_terminal(quiet: bool) -> Trainer:
    """``meta_train_and_evaluate`` with the phases on the terminal, then the report and where
    the files went (on rank 0 of a distributed run; the other ranks train silently)."""

    def train(
        family_name: str,
        family: TaskFamily,
        meta_overrides: Mapping[str, Any] | None,
        out_dir: Path | str,
        callbacks: Sequence[MetaTrainCallback] = (),
        on_phase: PhaseHook | None = None,
    ) -> MetaTrainOutcome:
        total = resolve_meta_train_config(family, meta_overrides).meta_iterations
        main_rank = current_ranks().main
        display = PhaseDisplay(total, quiet=quiet or not main_rank, also=on_phase)
        assert display.training is not None
        try:
            outcome = meta_train_and_evaluate(
                family_name, family, meta_overrides, out_dir, [display.training, *callbacks], on_phase=display
            )
        finally:
            display.close()
        if main_rank:
            _print_report(outcome.report)
            print(stop_summary(outcome))
            print(f"\nwrote {outcome.optimizer_dir} and {outcome.directory / 'evaluation.json'}")
        return outcome

    return train


def cmd_meta_train(args: argparse.Namespace) -> int:
    """``l2l meta-train`` without the registry: train, evaluate, write the files."""
    family = make_family(args.family, parse_assignments(args.set))
    trainer_on_terminal(args.quiet)(args.family, family, parse_assignments(args.meta), args.out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    display = PhaseDisplay(None, quiet=args.quiet)
    try:
        report = evaluate_trained(
            args.directory,
            args.family,
            parse_assignments(args.set) if args.set else None,
            parse_assignments(args.eval),
            args.steps,
            on_phase=display,
        )
    finally:
        display.close()
    _print_report(report)
    if args.out:
        json_path, plot_path = write_evaluation(report, Path(args.out))
        print(f"\nwrote {json_path} and {plot_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2l", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    families = commands.add_parser("families", help="list the installed task families")
    families.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    families.add_argument("name", nargs="?", help="family name (with 'show')")
    families.add_argument("--json", action="store_true", help="machine-readable listing")
    families.set_defaults(handler=cmd_families)

    train = commands.add_parser("meta-train", help="meta-train an LSTM optimizer for a family and evaluate it")
    train.add_argument("family", help="family name (see `l2l families`)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="family config field")
    train.add_argument(
        "--meta", action="append", default=[], metavar="KEY=VALUE",
        help="meta-training config override, dotted for nesting (e.g. network.hidden_size=40)",
    )
    train.add_argument("--out", required=True, type=Path, help="output directory (resumes if it has a checkpoint)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_launch_arguments(train)
    train.set_defaults(handler=cmd_meta_train)

    evaluate = commands.add_parser("evaluate", help="evaluate a trained optimizer on any family config")
    evaluate.add_argument("directory", type=Path, help="a trained optimizer's directory (holds optimizer.json)")
    evaluate.add_argument("family", nargs="?", help="family to evaluate on (default: the one it was trained on)")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="family config field")
    evaluate.add_argument("--eval", action="append", default=[], metavar="KEY=VALUE", help="evaluation config field")
    evaluate.add_argument("--steps", type=int, help="optimizee steps (default: the meta-training horizon)")
    evaluate.add_argument("--out", type=Path, help="write evaluation.json and the plot here")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=cmd_evaluate)

    _load_extensions(commands)
    return parser


def _load_extensions(commands: argparse._SubParsersAction) -> None:
    """Other distributions (the registry) add commands through the ``l2l_plugin.cli`` group."""
    for entry_point in entrypoints.get_group_all(CLI_EXTENSION_GROUP):
        try:
            entry_point.load()(commands)
        except Exception as exc:  # a broken extension must not take the whole CLI down
            warnings.warn(f"l2l CLI extension {entry_point.name!r} failed: {exc}", RuntimeWarning, stacklevel=2)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "meta-train" and getattr(args, "search", None) and (wants_launch(args) or launched_as_rank()):
            raise LaunchError(
                "--search runs its trials in one process: leave out --nproc/--nnodes and torchrun, then train "
                "the winning recipe on ranks with its --meta values"
            )
        if args.command == "meta-train" and wants_launch(args):
            # A bad config is one error here, not one per rank.
            resolve_meta_train_config(make_family(args.family, parse_assignments(args.set)), parse_assignments(args.meta))
            return launch(args, argv)  # torchrun's agent; every rank runs this same command line
        with process_group_from_env():  # inside a rank (torchrun): join its group
            return int(args.handler(args))
    except L2LError as exc:  # the user's to fix or retry: the message, no traceback
        print(f"l2l: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:
        print(f"l2l: invalid configuration:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
