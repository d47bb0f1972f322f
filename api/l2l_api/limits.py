"""What one request may cost. MetaTrainConfig's own bounds are generous (a researcher's machine);
a shared service caps the knobs that multiply compute or memory, and always sets a wall-clock
budget. A family's own fields (dimension, hidden units...) are bounded by the family's schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from l2l_api.settings import Settings
from l2l_plugin.families import TaskFamily
from l2l_plugin.optimizer.cost import state_bytes_per_coordinate, step_work_per_coordinate
from l2l_plugin.patterns import UnsafePatternError, check_group_pattern
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


def _limit_error(
    path: list[str], message: str, value: Any, limit: float, field: str = "meta_overrides"
) -> dict[str, Any]:
    return {
        "type": "limit_exceeded",
        "loc": ["body", field, *path],
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
        if isinstance(value, (int, float)) and value > limit:  # 'auto' threads: capped by the worker's cores
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
    for index, rule in enumerate(config.network.groups):
        try:
            check_group_pattern(rule.pattern)
        except UnsafePatternError as exc:
            errors.append(_value_error(["network", "groups", index, "pattern"], str(exc), rule.pattern))
    return errors + grid_errors(config, settings)


def _value_error(path: list[Any], message: str, value: Any) -> dict[str, Any]:
    return {"type": "value_error", "loc": ["body", "meta_overrides", *path], "msg": message, "input": value}


def grid_errors(config: MetaTrainConfig, settings: Settings) -> list[dict[str, Any]]:
    """The baselines' learning-rate grid: inside the service's range and not too many points."""
    from l2l_plugin.evaluation.evaluate import learning_rate_grid

    evaluation, (low, high) = config.evaluation, settings.lr_range
    errors = [
        _value_error(
            ["evaluation", name],
            f"{value} is outside the learning rates this service evaluates, [{low:g}, {high:g}] "
            f"(set by {settings.model_config['env_prefix']}LR_RANGE)",
            value,
        )
        for name, value in (("lr_min", evaluation.lr_min), ("lr_max", evaluation.lr_max))
        if not low <= value <= high
    ]
    if not errors and (points := len(learning_rate_grid(evaluation))) > settings.max_lr_grid_points:
        message = (
            f"the grid lr_min..lr_max at lr_points_per_decade has {points} points, above this "
            f"service's limit of {settings.max_lr_grid_points}"
        )
        errors.append(_limit_error(["evaluation", "lr_points_per_decade"], message, points, settings.max_lr_grid_points))
    return errors


def non_finite_errors(value: Any, *where: Any) -> list[dict[str, Any]]:
    """Infinity and NaN anywhere in a request part (JSON allows neither; Python's parser does)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [{"type": "finite_number", "loc": ["body", *where], "msg": "must be a finite number", "input": str(value)}]
    if isinstance(value, Mapping):
        return [error for key, item in value.items() for error in non_finite_errors(item, *where, key)]
    if isinstance(value, list | tuple):
        return [error for index, item in enumerate(value) for error in non_finite_errors(item, *where, index)]
    return []


def cost_errors(family: TaskFamily, config: MetaTrainConfig, settings: Settings) -> list[dict[str, Any]]:
    """The family's declared cost (TaskFamily.cost) against the service's caps; none declared: none."""
    cost = family.cost()
    if cost is None:
        return []
    prefix = settings.model_config["env_prefix"]
    evaluation = config.evaluation
    tasks_at_once = max(config.meta_batch_size, config.validation_tasks, evaluation.test_tasks, evaluation.tuning_tasks)
    # The optimizer's own state (h, c, moments, NTM-BFGS's memory) lives beside every task's.
    optimizer_bytes = cost.coordinates * state_bytes_per_coordinate(config.network)
    memory_mb = (cost.memory_floats * 4 + optimizer_bytes) * tasks_at_once / 2**20
    errors = []
    if memory_mb > settings.max_task_memory_mb:
        message = (
            f"this config needs about {memory_mb:,.0f} MB for {tasks_at_once} tasks at once "
            f"({cost.memory_floats:,} floats per task, {optimizer_bytes:,} bytes of optimizer state), above this service's limit of "
            f"{settings.max_task_memory_mb:g} MB (set by {prefix}MAX_TASK_MEMORY_MB)"
        )
        errors.append(_limit_error([], message, cost.memory_floats, settings.max_task_memory_mb, "family_config"))
    if not errors:
        from l2l_plugin.evaluation.evaluate import learning_rate_grid

        steps = evaluation.steps or config.longest_horizon
        baselines = 4  # SGD, NAG, RMSprop, Adam, each tuned on the grid then run on the test tasks
        runs = evaluation.test_tasks * (1 + baselines) + evaluation.tuning_tasks * baselines * len(
            learning_rate_grid(evaluation)
        )
        work = (cost.step_work + cost.coordinates * step_work_per_coordinate(config.network)) * steps * runs
        if work > settings.max_evaluation_work:
            message = (
                f"evaluating this config costs about {work:.3g} multiply-adds ({runs} runs of "
                f"{steps} steps), above this service's limit of {settings.max_evaluation_work:.3g} "
                f"(set by {prefix}MAX_EVALUATION_WORK)"
            )
            errors.append(_limit_error([], message, work, settings.max_evaluation_work, "family_config"))
    return errors


def effective_overrides(
    overrides: Mapping[str, Any], config: MetaTrainConfig, settings: Settings
) -> dict[str, Any]:
    """The overrides a job runs with: the request's, plus the service's time budget when unset."""
    effective = dict(overrides)
    if config.max_seconds is None:
        effective["max_seconds"] = settings.max_train_seconds
    return effective
