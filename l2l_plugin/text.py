"""Text for people: clipped values and plain-text tables (the CLIs, tags, job messages)."""

from __future__ import annotations

from collections.abc import Sequence

ELLIPSIS = "..."


def clip(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else cut to ``limit`` ending in ``...``."""
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows (the first one the header) in columns two spaces apart.

    The last column is not padded: it holds free text (a status, a reason) that may be long.
    """
    if not rows:
        return ""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[-1]]).rstrip()
        for row in rows
    )
