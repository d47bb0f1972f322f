"""What one request may cost. MetaTrainConfig's own bounds are generous (a researcher's machine);
a shared service caps the knobs that multiply compute or memory, and always sets a wall-clock
budget. A family's own fields (dimension, hidden units...) are bounded by the family's schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from l2l_api.settings import Settings
from l2l_plugin.training import MetaTrainConfig

MAX_GROUP_RULES = 16  # each rule is a regular expression applied to every parameter name


def _limits(settings: Settings) -> list[tuple[tuple[str, ...], str, float]]:
    """(path in the config, settings field, limit)."""
    return [
        (("meta_iterations",), "max_meta_iterations", settings.max_meta_iterations),
        (("horizon",), "max_horizon", settings.max_horizon),
        (("meta_batch_size",), "max_meta_batch_size", settings.max_meta_batch_size),
        (("validation_tasks",), "max_validation_tasks", settings.max_validation_tasks),
        (("evaluation", "test_tasks"), "max_test_tasks", settings.max_test_tasks),
        (("evaluation", "tuning_tasks"), "max_tuning_tasks", settings.max_tuning_tasks),
        (("evaluation", "steps"), "max_evaluation_steps", settings.max_evaluation_steps),
        (("cpu_threads",), "max_cpu_threads", settings.max_cpu_threads),
        (("max_seconds",), "max_train_seconds", settings.max_train_seconds),
    ]


def _get(config: MetaTrainConfig, path: tuple[str, ...]) -> Any:
    value: Any = config
    for part in path:
        value = getattr(value, part)
    return value


def limit_errors(config: MetaTrainConfig, settings: Settings) -> list[dict[str, Any]]:
    """Errors in FastAPI's 422 format for every knob above the service's limits."""
    errors = []
    for path, field, limit in _limits(settings):
        value = _get(config, path)
        if value is not None and value > limit:
            errors.append(
                {
                    "type": "limit_exceeded",
                    "loc": ["body", "meta_overrides", *path],
                    "msg": f"{value} exceeds this service's limit of {limit:g} "
                    f"(set by {settings.model_config['env_prefix']}{field.upper()})",
                    "input": value,
                    "ctx": {"limit": limit},
                }
            )
    if config.longest_horizon > settings.max_horizon and config.horizon <= settings.max_horizon:
        errors.append(
            {
                "type": "limit_exceeded",
                "loc": ["body", "meta_overrides", "horizon_curriculum"],
                "msg": f"a curriculum horizon of {config.longest_horizon} exceeds this service's limit of "
                f"{settings.max_horizon:g} (set by {settings.model_config['env_prefix']}MAX_HORIZON)",
                "input": config.longest_horizon,
                "ctx": {"limit": settings.max_horizon},
            }
        )
    if config.validation_steps > settings.max_evaluation_steps:
        errors.append(
            {
                "type": "limit_exceeded",
                "loc": ["body", "meta_overrides", "validation_horizon"],
                "msg": f"validation runs {config.validation_steps} steps, above this service's limit of "
                f"{settings.max_evaluation_steps}",
                "input": config.validation_steps,
                "ctx": {"limit": settings.max_evaluation_steps},
            }
        )
    if config.evaluation.steps is None and config.longest_horizon > settings.max_evaluation_steps:
        errors.append(
            {
                "type": "limit_exceeded",
                "loc": ["body", "meta_overrides", "horizon"],
                "msg": f"evaluation runs horizon={config.longest_horizon} steps, above this service's limit of "
                f"{settings.max_evaluation_steps}",
                "input": config.longest_horizon,
                "ctx": {"limit": settings.max_evaluation_steps},
            }
        )
    if len(config.network.groups) > MAX_GROUP_RULES:
        errors.append(
            {
                "type": "limit_exceeded",
                "loc": ["body", "meta_overrides", "network", "groups"],
                "msg": f"at most {MAX_GROUP_RULES} group rules",
                "input": len(config.network.groups),
                "ctx": {"limit": MAX_GROUP_RULES},
            }
        )
    return errors


def effective_overrides(
    overrides: Mapping[str, Any], config: MetaTrainConfig, settings: Settings
) -> dict[str, Any]:
    """The overrides a job runs with: the request's, plus the service's time budget when unset."""
    effective = dict(overrides)
    if config.max_seconds is None:
        effective["max_seconds"] = settings.max_train_seconds
    return effective
