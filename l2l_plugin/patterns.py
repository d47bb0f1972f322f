"""Group patterns (``network.groups[].pattern``) limited to regular expressions that cannot
backtrack catastrophically.

A pattern is searched in every parameter name at every optimizer step, and it can come from a
file someone else wrote (a registry artifact, a downloaded optimizer) or a service request.
Python's ``re`` backtracks, so ``^(\\w+\\.?)*#$`` takes exponential time on a long name. Rather
than a second regex engine, patterns are checked against a safe subset on their parsed form:

- no quantifier inside another quantifier (``(a+)*``, ``(\\w+\\.?)*`` — the classic blow-up);
- no alternation under a quantifier (``(a|ab)*``), no backreferences, no lookaround;
- at most :data:`MAX_PATTERN_LENGTH` characters.

Everything a group split needs (``^conv``, ``^fc\\d+\\.weight$``, ``_bn\\.``, ``(conv|fc)1``)
stays allowed; the search is then linear in the name for a fixed pattern.
"""

from __future__ import annotations

import re
from typing import Any

from l2l_plugin.errors import L2LError

try:  # Python 3.11+: the parser lives in re._parser
    from re import _constants as sre_constants  # type: ignore[attr-defined]
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - older Pythons
    import sre_constants  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

MAX_PATTERN_LENGTH = 200

_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, getattr(sre_constants, "POSSESSIVE_REPEAT", None)}
_FORBIDDEN = {
    sre_constants.GROUPREF: "a backreference",
    sre_constants.GROUPREF_EXISTS: "a conditional group",
    sre_constants.ASSERT: "a lookahead/lookbehind",
    sre_constants.ASSERT_NOT: "a negative lookahead/lookbehind",
}


class UnsafePatternError(L2LError, ValueError):
    """A group pattern outside the safe subset (see the module docstring)."""


def _children(op: Any, argument: Any) -> list[Any]:
    """The sub-patterns of one parsed node."""
    if op in _REPEATS:
        return [argument[2]]
    if op == sre_constants.SUBPATTERN:
        return [argument[-1]]
    if op == sre_constants.BRANCH:
        return list(argument[1])
    if op == getattr(sre_constants, "ATOMIC_GROUP", None):
        return [argument]
    return []


def _walk(items: Any, under_repeat: bool, pattern: str) -> None:
    for op, argument in items:
        if op in _FORBIDDEN:
            raise UnsafePatternError(f"group pattern {pattern!r} uses {_FORBIDDEN[op]}, which is not allowed")
        if op in _REPEATS:
            unbounded_or_many = argument[1] == sre_constants.MAXREPEAT or argument[1] > 1
            if under_repeat and unbounded_or_many:
                raise UnsafePatternError(
                    f"group pattern {pattern!r} nests a repetition inside another (catastrophic "
                    "backtracking); write it without the nested quantifier"
                )
            _walk(argument[2], under_repeat or unbounded_or_many, pattern)
            continue
        if op == sre_constants.BRANCH and under_repeat:
            raise UnsafePatternError(
                f"group pattern {pattern!r} repeats an alternation (catastrophic backtracking)"
            )
        for child in _children(op, argument):
            _walk(child, under_repeat, pattern)


def check_group_pattern(pattern: str) -> str:
    """``pattern`` if it compiles and is in the safe subset; :class:`UnsafePatternError` otherwise."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UnsafePatternError(f"group pattern is {len(pattern)} characters long (at most {MAX_PATTERN_LENGTH})")
    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:
        raise UnsafePatternError(f"group pattern {pattern!r} is not a regular expression: {exc}") from None
    _walk(parsed, False, pattern)
    return pattern
