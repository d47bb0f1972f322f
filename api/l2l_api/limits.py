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


def _limit_error(path: list[str], message: str, value: Any, limit: float) -> dict[str, Any]:
    return {
        "type": "limit_exceeded",
        "loc": ["body", "meta_overrides", *path],
        "msg": message,
        "input": value,
        "ctx": {"limit": limit},
    }


def limit_errors(config: MetaTrainConfig, settings: Settings) -> list[dict[str, Any]]:
    """Errors in FastAPI's 422 format for every knob above the service's limits."""
    prefix = settings.model_config["env_prefix"]
    errors = []
    for path, field, limit in _limits(settings):
        value = _get(config, path)
        if value is not None and value > limit:
            message = f"{value} exceeds this service's limit of {limit:g} (set by {prefix}{field.upper()})"
            errors.append(_limit_error(list(path), message, value, limit))
    longest, steps_limit = config.longest_horizon, settings.max_evaluation_steps
    if longest > settings.max_horizon and config.horizon <= settings.max_horizon:
        message = (
            f"a curriculum horizon of {longest} exceeds this service's limit of "
            f"{settings.max_horizon:g} (set by {prefix}MAX_HORIZON)"
        )
        errors.append(_limit_error(["horizon_curriculum"], message, longest, settings.max_horizon))
    if config.validation_horizon is not None and config.validation_steps > steps_limit:
        message = f"validation runs {config.validation_steps} steps, above this service's limit of {steps_limit}"
        errors.append(_limit_error(["validation_horizon"], message, config.validation_steps, steps_limit))
    if config.evaluation.steps is None and longest > steps_limit:
        message = f"evaluation runs horizon={longest} steps, above this service's limit of {steps_limit}"
        errors.append(_limit_error(["horizon"], message, longest, steps_limit))
    if len(config.network.groups) > MAX_GROUP_RULES:
        message = f"at most {MAX_GROUP_RULES} group rules"
        errors.append(_limit_error(["network", "groups"], message, len(config.network.groups), MAX_GROUP_RULES))
    return errors


def effective_overrides(
    overrides: Mapping[str, Any], config: MetaTrainConfig, settings: Settings
) -> dict[str, Any]:
    """The overrides a job runs with: the request's, plus the service's time budget when unset."""
    effective = dict(overrides)
    if config.max_seconds is None:
        effective["max_seconds"] = settings.max_train_seconds
    return effective
