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

# After __version__: the modules below read it.
from l2l_plugin.artifacts import TrainedOptimizer, load_trained_optimizer  # noqa: E402
from l2l_plugin.optimizer.learned_optimizer import LearnedOptimizer  # noqa: E402

__all__ = [
    "FamilyLoadError",
    "LearnedOptimizer",
    "Task",
    "TrainedOptimizer",
    "TaskFamily",
    "UnknownFamilyError",
    "__version__",
    "check_family",
    "discover_families",
    "get_family",
    "load_trained_optimizer",
    "make_family",
]
