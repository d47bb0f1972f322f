"""Find task families through the ``l2l_plugin.families`` entry-point group.

A plugin that fails to import is reported (a warning, and an entry with its error) while every
other family keeps working, like MLflow's plugin registry.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import entrypoints

from l2l_plugin.errors import UsageError
from l2l_plugin.families.base import TaskFamily

ENTRY_POINT_GROUP = "l2l_plugin.families"


class UnknownFamilyError(UsageError, LookupError):
    """No family of that name is installed."""

    def __init__(self, name: str, available: list[str]) -> None:
        listed = ", ".join(available) if available else "(none installed)"
        super().__init__(f"unknown task family {name!r}; available families: {listed}")
        self.name = name
        self.available = available


class FamilyLoadError(UsageError, RuntimeError):
    """A family's plugin is installed but could not be loaded."""


@dataclass(frozen=True)
class FamilyEntry:
    """A discovered family: its class when it loaded, its error when it did not."""

    name: str
    target: str
    distribution: str | None
    family: type[TaskFamily] | None
    error: str | None

    @property
    def description(self) -> str:
        return self.family.description() if self.family else ""

    def schema(self) -> dict[str, Any] | None:
        return self.family.model_json_schema() if self.family else None


def _load_entry(entry_point: entrypoints.EntryPoint) -> FamilyEntry:
    distro = entry_point.distro
    # dist-info folders spell names with underscores; show the name as the user installs it.
    distribution = f"{distro.name.replace('_', '-')} {distro.version}" if distro is not None else None
    target = f"{entry_point.module_name}:{entry_point.object_name}"
    try:
        loaded = entry_point.load()
    except Exception as exc:  # a plugin may raise anything on import; report it, keep going
        error = f"failed to load {target}: {type(exc).__name__}: {exc}"
        warnings.warn(f"task family {entry_point.name!r}: {error}", RuntimeWarning, stacklevel=3)
        return FamilyEntry(entry_point.name, target, distribution, None, error)
    if not (isinstance(loaded, type) and issubclass(loaded, TaskFamily)):
        error = f"entry point {target} is {loaded!r}, not a subclass of l2l_plugin.TaskFamily"
        warnings.warn(f"task family {entry_point.name!r}: {error}", RuntimeWarning, stacklevel=3)
        return FamilyEntry(entry_point.name, target, distribution, None, error)
    return FamilyEntry(entry_point.name, target, distribution, loaded, None)


@functools.cache
def discover_families() -> Mapping[str, FamilyEntry]:
    """Every family installed, by name (cached; :func:`refresh_families` re-scans)."""
    found: dict[str, FamilyEntry] = {}
    for entry_point in entrypoints.get_group_all(ENTRY_POINT_GROUP):
        if entry_point.name in found:
            # entrypoints lists the first distribution on sys.path first, as importing would.
            continue
        found[entry_point.name] = _load_entry(entry_point)
    return dict(sorted(found.items()))


def refresh_families() -> Mapping[str, FamilyEntry]:
    """Forget the cached scan (after installing a plugin at run time) and scan again."""
    discover_families.cache_clear()
    return discover_families()


def get_family(name: str) -> type[TaskFamily]:
    """The family class registered as ``name``."""
    families = discover_families()
    entry = families.get(name)
    if entry is None:
        raise UnknownFamilyError(name, list(families))
    if entry.family is None:
        raise FamilyLoadError(f"task family {name!r} is installed but broken: {entry.error}")
    return entry.family


def make_family(name: str, config: Mapping[str, Any] | None = None) -> TaskFamily:
    """Validate ``config`` against family ``name``'s schema (raises pydantic.ValidationError)."""
    return get_family(name).model_validate(dict(config or {}))


def family_name(family: TaskFamily) -> str:
    """The registered name of a family instance's class."""
    for name, entry in discover_families().items():
        if entry.family is type(family):
            return name
    raise UnknownFamilyError(type(family).__qualname__, list(discover_families()))
