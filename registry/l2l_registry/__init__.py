"""l2l-registry: meta-trained optimizers in an MLflow model registry.

    from l2l_registry import load_optimizer
    opt = load_optimizer("models:/l2l-quadratic@champion", model.parameters())

mlflow itself is imported only when a function needs it, so ``import l2l_registry`` (and the
``l2l`` CLI, which loads this package as an extension) stays fast.
"""

from l2l_registry.conventions import CHAMPION_ALIAS, champion_uri, model_name, version_uri
from l2l_registry.errors import FamilyMismatchWarning, OptimizerNotFoundError, PublishError, RegistryError
from l2l_registry.gate import ChampionComparison, GateDecision
from l2l_registry.listing import FamilyInfo, VersionInfo, champion_version, list_families, list_versions
from l2l_registry.loading import load_optimizer, load_trained
from l2l_registry.promote import promote
from l2l_registry.publish import (
    MetaTrainingRun,
    PublishedRun,
    PublishResult,
    meta_train_and_publish,
    meta_train_and_register,
)
from l2l_registry.store import DATA_DIR_ENV, Store, configure, default_data_dir

__version__ = "0.1.0"

__all__ = [
    "CHAMPION_ALIAS",
    "DATA_DIR_ENV",
    "ChampionComparison",
    "FamilyInfo",
    "FamilyMismatchWarning",
    "GateDecision",
    "MetaTrainingRun",
    "OptimizerNotFoundError",
    "PublishError",
    "PublishResult",
    "PublishedRun",
    "RegistryError",
    "Store",
    "VersionInfo",
    "__version__",
    "champion_uri",
    "champion_version",
    "configure",
    "default_data_dir",
    "list_families",
    "list_versions",
    "load_optimizer",
    "load_trained",
    "meta_train_and_publish",
    "meta_train_and_register",
    "model_name",
    "promote",
    "version_uri",
]
