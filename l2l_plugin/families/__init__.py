"""Task families: the plugin contract, entry-point discovery and the conformance checks."""

from l2l_plugin.families.base import (
    LoopedTaskStack,
    Params,
    Task,
    TaskCost,
    TaskFamily,
    TaskStack,
    seeded_generator,
)
from l2l_plugin.families.conformance import FamilyContractError, check_family
from l2l_plugin.families.discovery import (
    ENTRY_POINT_GROUP,
    FamilyEntry,
    FamilyLoadError,
    UnknownFamilyError,
    discover_families,
    family_name,
    get_family,
    make_family,
    refresh_families,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "FamilyContractError",
    "FamilyEntry",
    "FamilyLoadError",
    "LoopedTaskStack",
    "Params",
    "Task",
    "TaskCost",
    "TaskFamily",
    "TaskStack",
    "UnknownFamilyError",
    "check_family",
    "discover_families",
    "family_name",
    "get_family",
    "make_family",
    "refresh_families",
    "seeded_generator",
]
