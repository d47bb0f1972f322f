"""What the registry's commands print (``l2l meta-train --register``, ``l2l optimizers``, ``l2l demo``)."""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING

from l2l_plugin.pipeline import PHASE_PUBLISHING, PhaseHook, PhaseProgress
from l2l_plugin.text import table

if TYPE_CHECKING:
    from l2l_registry.listing import FamilyInfo, VersionInfo
    from l2l_registry.model_version import PublishResult


def print_publish_result(result: PublishResult, store_description: str) -> None:
    print(
        f"\nregistered {result.model_name} version {result.version} (run {result.run_id}) "
        f"in {store_description}"
    )
    if result.promoted:
        print(f"promoted to {result.model_name}@champion: {result.reason}")
    else:
        print(f"not promoted: {result.reason}")


def announce_publishing(quiet: bool) -> PhaseHook:
    """The publishing phase on stderr; the earlier phases have their progress bars, closed by then."""

    def announce(progress: PhaseProgress) -> None:
        if progress.phase == PHASE_PUBLISHING and not quiet:
            print(f"\n{progress.describe()} …", file=sys.stderr, flush=True)

    return announce


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def versions_table(versions: list[VersionInfo]) -> str:
    rows = [
        ("VERSION", "CHAMPION", "CREATED", "LEARNED MEAN", "GEOMEAN", "WIN RATE", "BASELINES", "SEARCH", "STEP COST", "PROMOTION")
    ]
    for info in versions:
        m = info.metrics
        created = (
            dt.datetime.fromtimestamp(info.created_ms / 1000).strftime("%Y-%m-%d %H:%M")
            if info.created_ms
            else "-"
        )
        win = m.get("eval.win_rate_vs_best_baseline")
        rows.append(
            (
                info.version,
                "*" if info.champion else "",
                created,
                _fmt(m.get("eval.learned.final_loss_mean")),
                _fmt(m.get("eval.learned.final_loss_geomean")),
                "-" if win is None else f"{win:.0%}",
                "beaten" if info.tags.get("l2l.beats_every_baseline") == "true" else "not beaten",
                info.search_label(),
                info.cost_label(),
                (info.promotion or "-") + (f": {info.promotion_reason}" if info.promotion_reason else ""),
            )
        )
    return table(rows)


def families_table(families: list[FamilyInfo]) -> str:
    rows = [("FAMILY", "MODEL", "VERSIONS", "CHAMPION")]
    rows += [(f.family, f.model_name, str(f.versions), f.champion_version or "-") for f in families]
    return table(rows)
