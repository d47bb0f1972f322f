"""The registry's ``l2l`` commands, added through the ``l2l_plugin.cli`` entry point:

- ``l2l meta-train FAMILY … --register``: also publish the run and a model version;
- ``l2l optimizers [FAMILY] [--json]``: registered families, or one family's versions;
- ``l2l promote FAMILY VERSION [--reason TEXT]``: force the champion alias;
- ``l2l demo``: the main job (meta-train quadratic, register, show, print the load line).

mlflow is imported inside the handlers: other ``l2l`` commands do not pay for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from l2l_plugin.cli import parse_assignments, trainer_on_terminal
from l2l_plugin.training.distributed import current_ranks
from l2l_registry.demo import add_demo_arguments, run_demo
from l2l_registry.display import announce_publishing, families_table, print_publish_result, versions_table


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """MLflow's own errors are the user's to fix too (e.g. a server that refuses a request: its
    message is the useful part): a message on stderr, exit code 1. The registry's errors are
    L2LErrors, which ``l2l``'s main catches with every other."""

    def wrapped(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except Exception as exc:
            if not type(exc).__module__.startswith("mlflow"):
                raise
            print(f"l2l: MLflow: {exc}", file=sys.stderr)
            return 1

    return wrapped


def search_handler(args: argparse.Namespace) -> int:
    """``--search``: the study, then the winning recipe trained, evaluated (and published)."""
    from l2l_registry.search import SearchRun, SearchSpec, default_study_name, parse_search, sqlite_storage
    from l2l_registry.store import configure

    requested = parse_search(args.search)
    storage = str(requested.pop("storage", "")) or sqlite_storage(args.out)
    study = str(requested.pop("study", ""))
    spec = SearchSpec.model_validate(requested)  # field errors: `l2l: invalid configuration`
    family_config, overrides = parse_assignments(args.set), parse_assignments(args.meta)
    study = study or default_study_name(args.family, family_config, overrides, spec)
    store = configure() if args.register else None
    search = SearchRun(
        args.family, family_config, overrides, spec,
        storage=storage, study_name=study, register=args.register, store=store, echo=not args.quiet,
    )
    outcome = search.run_search()
    print(outcome.message(), flush=True)
    _, published = search.train_and_publish(
        args.out, train=trainer_on_terminal(args.quiet), on_phase=announce_publishing(args.quiet)
    )
    if published is not None and store is not None:
        print_publish_result(published, store.describe())
    from sqlalchemy.engine import make_url

    shown = make_url(storage).render_as_string(hide_password=True)  # a PostgreSQL URL may carry one
    print(f"study {study} in {shown} (the same command resumes it)")
    return 0


def meta_train_handler(args: argparse.Namespace) -> int:
    from l2l_plugin.cli import cmd_meta_train

    if getattr(args, "search", None):
        return search_handler(args)
    if not args.register or not current_ranks().main:
        return cmd_meta_train(args)  # ranks other than 0 of a distributed run never log or publish
    from l2l_registry.publish import meta_train_and_publish
    from l2l_registry.store import configure

    store = configure()
    run = meta_train_and_publish(
        args.family, parse_assignments(args.set), parse_assignments(args.meta), args.out,
        store=store, train=trainer_on_terminal(args.quiet), on_phase=announce_publishing(args.quiet),
    )
    assert run.version is not None
    print_publish_result(run.version, store.describe())
    return 0


def optimizers_handler(args: argparse.Namespace) -> int:
    from l2l_registry.conventions import champion_uri, version_uri
    from l2l_registry.listing import list_families, list_versions, versions_json
    from l2l_registry.store import configure

    store = configure()
    if args.family:
        versions = list_versions(args.family, store)
        if args.json:
            print(versions_json(versions))
            return 0
        print(f"{store.describe()}\n")
        print(versions_table(versions))
        if any(v.champion for v in versions):
            print(f'\nload the champion: load_optimizer("{champion_uri(args.family)}", model.parameters())')
        else:
            latest = versions[-1].uri if versions else version_uri(args.family, "N")
            print(
                f"\nno champion yet: load a version by number, load_optimizer(\"{latest}\", model.parameters()), "
                f"or force one with `l2l promote {args.family} VERSION`"
            )
        return 0
    families = list_families(store)
    if args.json:
        print(json.dumps([f.as_dict() for f in families], indent=2))
        return 0
    print(f"{store.describe()}\n")
    if not families:
        print("no optimizer registered yet: `l2l meta-train FAMILY --register` (or `l2l demo`) publishes one")
        return 0
    print(families_table(families))
    return 0


def promote_handler(args: argparse.Namespace) -> int:
    from l2l_registry.conventions import champion_uri
    from l2l_registry.promote import promote

    previous = promote(args.family, args.version, args.reason)
    was = f" (was version {previous})" if previous else ""
    print(f"{champion_uri(args.family)} is now version {args.version}{was}; recorded as a forced promotion")
    return 0


def extend(commands: argparse._SubParsersAction) -> None:
    """Entry point of the ``l2l_plugin.cli`` group."""
    train = commands.choices["meta-train"]
    train.add_argument(
        "--register",
        action="store_true",
        help="log the run to MLflow and register a version of l2l-FAMILY (promoted to @champion if it wins)",
    )
    train.add_argument(
        "--search",
        metavar="trials=N,budget=SECONDS,...",
        help="search the meta-training recipe first (Optuna; README 'Searching a recipe'), then train "
        "the best to the full budget; also trial_seconds, trial_iterations, pruner, storage, study",
    )
    train.set_defaults(handler=_guard(meta_train_handler))

    listing = commands.add_parser(
        "optimizers", help="list registered optimizers (all families, or one family's versions)"
    )
    listing.add_argument("family", nargs="?", help="show this family's versions")
    listing.add_argument("--json", action="store_true", help="machine-readable listing")
    listing.set_defaults(handler=_guard(optimizers_handler))

    promote = commands.add_parser(
        "promote", help="force a version to be its family's champion (recorded in a tag)"
    )
    promote.add_argument("family")
    promote.add_argument("version")
    promote.add_argument("--reason", help="why the gate is overridden (stored with the version)")
    promote.set_defaults(handler=_guard(promote_handler))

    demo = commands.add_parser(
        "demo", help="the main job: meta-train a quadratic optimizer, register it, show how to load it"
    )
    add_demo_arguments(demo)
    demo.set_defaults(handler=_guard(run_demo))
