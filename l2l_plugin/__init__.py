"""l2l-plugin: learned LSTM optimizers, meta-trained per task family (Andrychowicz et al. 2016)."""

from l2l_plugin.families import (
    FamilyLoadError,
    Task,
    TaskFamily,
    UnknownFamilyError,
    check_family,
    discover_families,
    get_family,
    make_family,
)

__version__ = "0.1.0"

__all__ = [
    "FamilyLoadError",
    "Task",
    "TaskFamily",
    "UnknownFamilyError",
    "__version__",
    "check_family",
    "discover_families",
    "get_family",
    "make_family",
]
