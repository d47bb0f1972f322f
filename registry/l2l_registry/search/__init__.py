"""Recipe search (AutoML): an Optuna study over the meta-training recipe of a family.

- :mod:`~l2l_registry.search.space`: the knobs, declared once, and how hints narrow them;
- :mod:`~l2l_registry.search.spec`: ``SearchSpec``, what ``--search`` / ``"search"`` ask for;
- :mod:`~l2l_registry.search.study`: the study, trials as short meta-trainings, pruning;
- :mod:`~l2l_registry.search.tracking`: a nested MLflow run per trial, the manifest's record;
- :mod:`~l2l_registry.search.run`: search, train the winner, publish (CLI and service).

Optuna lives here, in the registry layer; the library (``l2l_plugin``) never imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy: the service validates requests with SearchSpec without importing optuna and torch's
# training stack until a search actually runs.
_EXPORTS = {
    "SearchRun": "run",
    "default_study_name": "run",
    "sqlite_storage": "run",
    "SearchSpace": "space",
    "SearchSpaceError": "space",
    "declared_knobs": "space",
    "SearchSpec": "spec",
    "parse_search": "spec",
    "RecipeSearch": "study",
    "SearchOutcome": "outcome",
    "SearchStopped": "study",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'l2l_registry.search' has no attribute {name!r}")
    return getattr(importlib.import_module(f"l2l_registry.search.{_EXPORTS[name]}"), name)
