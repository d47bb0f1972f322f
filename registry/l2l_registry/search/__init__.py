"""Recipe search (AutoML): an Optuna study over the meta-training recipe of a family.

- :mod:`~l2l_registry.search.space`: the knobs, declared once, and how hints narrow them;
- :mod:`~l2l_registry.search.spec`: ``SearchSpec``, what ``--search`` / ``"search"`` ask for;
- :mod:`~l2l_registry.search.study`: the study, trials as short meta-trainings, pruning;
- :mod:`~l2l_registry.search.tracking`: a nested MLflow run per trial, the manifest's record;
- :mod:`~l2l_registry.search.run`: search, train the winner, publish (CLI and service).

Optuna lives here, in the registry layer; the library (``l2l_plugin``) never imports it.
"""

from l2l_registry.search.run import SearchRun, default_study_name, sqlite_storage
from l2l_registry.search.space import SearchSpace, SearchSpaceError, declared_knobs
from l2l_registry.search.spec import SearchSpec, parse_search
from l2l_registry.search.study import RecipeSearch, SearchOutcome, SearchStopped

__all__ = [
    "RecipeSearch",
    "SearchOutcome",
    "SearchRun",
    "SearchSpace",
    "SearchSpaceError",
    "SearchSpec",
    "SearchStopped",
    "declared_knobs",
    "default_study_name",
    "parse_search",
    "sqlite_storage",
]
