"""The ``l2l`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from l2l_plugin.families import FamilyLoadError, UnknownFamilyError, discover_families, get_family


def _families_table() -> str:
    rows = [("NAME", "DISTRIBUTION", "DESCRIPTION", "STATUS")]
    for entry in discover_families().values():
        status = "ok" if entry.error is None else f"error: {entry.error}"
        rows.append((entry.name, entry.distribution or "-", entry.description, status))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
        for row in rows
    )


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
    return json.dumps(
        {
            "name": name,
            "description": family.description(),
            "defaults": family().model_dump(mode="json"),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l2l", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    families = commands.add_parser("families", help="list the installed task families")
    families.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    families.add_argument("name", nargs="?", help="family name (with 'show')")
    families.add_argument("--json", action="store_true", help="machine-readable listing")
    families.set_defaults(handler=cmd_families)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (UnknownFamilyError, FamilyLoadError) as exc:
        print(f"l2l: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print(f"l2l: invalid configuration:\n{exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
