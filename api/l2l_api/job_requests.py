"""A meta-training request checked before anything is queued: the family's own schema, then
MetaTrainConfig, then the service's limits and cost caps. Any problem is an
:class:`~l2l_api.service_errors.InvalidJobRequest` listing every field error at once (a 422).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from l2l_api.limits import cost_errors, effective_overrides, limit_errors, non_finite_errors
from l2l_api.schemas import MetaTrainRequest
from l2l_api.search import effective_search, search_errors
from l2l_api.service_errors import InvalidJobRequest
from l2l_api.settings import Settings
from l2l_plugin.families import TaskFamily, get_family
from l2l_plugin.training import MetaTrainConfig, resolve_device
from l2l_plugin.training.distribution import check_distribution
from l2l_plugin.training.presets import meta_train_recipe


def field_errors(exc: ValidationError, *prefix: str) -> list[dict[str, Any]]:
    """A pydantic error list in FastAPI's 422 format, located under ``prefix`` in the body.

    Through pydantic's own JSON so the error context (which may hold exception objects) is
    serialisable; URLs to pydantic's docs are left out.
    """
    errors = json.loads(exc.json(include_url=False))
    for error in errors:
        error["loc"] = [*prefix, *error.get("loc", [])]
    return errors


@dataclass(frozen=True)
class ValidatedRequest:
    family: str
    family_config: dict[str, Any]
    meta_overrides: dict[str, Any]
    register: bool
    iterations: int
    search: dict[str, Any] | None = None  # the recipe search the job runs first (l2l_api.search)
    ranks: int = 1  # torch.distributed ranks (README "Scaling out")


def distribution_errors(family: TaskFamily, config: MetaTrainConfig, settings: Settings) -> list[dict[str, Any]]:
    """``family_distribution`` draws family configs: server-only fields stay off it, and every
    value it can draw must be valid for the family (422 now, not a failed job later)."""
    location = ["body", "meta_overrides", "family_distribution"]
    errors = [
        {
            "type": "server_only",
            "loc": [*location, name],
            "msg": "this field is set on the server only (L2L_API_SERVER_ONLY_FAMILY_FIELDS)",
            "input": name,
        }
        for name in config.family_distribution
        if name in settings.server_only_family_fields
    ]
    if not errors:
        try:
            check_distribution(family, config.family_distribution)
        except ValueError as exc:
            errors.append({"type": "value_error", "loc": location, "msg": str(exc), "input": None})
    return errors


def validate_request(request: MetaTrainRequest, settings: Settings) -> ValidatedRequest:
    """The family's own schema, then MetaTrainConfig, then this service's limits
    (:class:`InvalidJobRequest` on any). The family is looked up among the discovered entry
    points, never imported by name (UnknownFamilyError, FamilyLoadError)."""
    family_class = get_family(request.family)
    errors: list[dict[str, Any]] = [
        {
            "type": "server_only",
            "loc": ["body", "family_config", name],
            "msg": "this field is set on the server only (L2L_API_SERVER_ONLY_FAMILY_FIELDS)",
            "input": request.family_config[name],
        }
        for name in settings.server_only_family_fields
        if name in request.family_config
    ]
    try:
        family = family_class.model_validate(request.family_config)
    except ValidationError as exc:
        errors += field_errors(exc, "body", "family_config")
    try:
        # The preset and the family's class-level defaults beneath the request's overrides, as
        # resolve_meta_train_config does; validated even when the family config is not, so one
        # answer lists every error.
        config = MetaTrainConfig.model_validate(
            meta_train_recipe(family_class.meta_train_defaults, request.meta_overrides)
        )
    except ValidationError as exc:
        errors += field_errors(exc, "body", "meta_overrides")
    errors += non_finite_errors(request.family_config, "family_config")
    errors += non_finite_errors(request.meta_overrides, "meta_overrides")
    if errors:
        raise InvalidJobRequest(errors)
    if errors := limit_errors(config, settings) + distribution_errors(family, config, settings):
        raise InvalidJobRequest(errors)
    if errors := cost_errors(family, config, settings):
        raise InvalidJobRequest(errors)
    if request.ranks > settings.max_ranks:
        raise InvalidJobRequest(
            [
                {
                    "type": "less_than_equal",
                    "loc": ["body", "ranks"],
                    "msg": f"at most {settings.max_ranks} ranks on this service (L2L_API_MAX_RANKS)",
                    "input": request.ranks,
                }
            ]
        )
    if request.search is not None and (
        errors := search_errors(request.search, family_class, config, request.meta_overrides, settings)
    ):
        raise InvalidJobRequest(errors)
    try:
        resolve_device(config.device)
    except RuntimeError as exc:
        raise InvalidJobRequest(
            [
                {
                    "type": "value_error",
                    "loc": ["body", "meta_overrides", "device"],
                    "msg": str(exc),
                    "input": config.device,
                }
            ]
        ) from None
    return ValidatedRequest(
        family=request.family,
        family_config=family.model_dump(mode="json"),
        meta_overrides=effective_overrides(request.meta_overrides, config, settings),
        register=request.should_register,
        iterations=config.meta_iterations,
        search=None if request.search is None else effective_search(request.search, settings),
        ranks=request.ranks,
    )
