"""The OpenAPI schema with each family's own config: POST /meta-train's body is a union of one
variant per installed family, discriminated by ``family``, whose ``family_config`` is that
family's JSON Schema (closed: the families forbid extra keys) without the server-only fields.

Validation itself stays in l2l_api.jobs (it locates errors under ``family_config`` and lists the
installed families for an unknown name); this only makes the published schema say the same.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import Field, StrictBool, TypeAdapter, create_model

from l2l_api.schemas import MetaTrainRequest
from l2l_plugin.families import discover_families

REQUEST_NAME = MetaTrainRequest.__name__
REF = "#/components/schemas/{model}"


def _variant(name: str, family: type, server_only: tuple[str, ...]) -> type:
    """A request model for one family (its config without the fields a request may not set)."""
    fields = {key: (info.annotation, info) for key, info in family.model_fields.items() if key not in server_only}
    config_model = create_model(
        f"{family.__name__}Config", __config__={"extra": "forbid"}, __doc__=family.__doc__, **fields
    )
    base = MetaTrainRequest.model_fields
    return create_model(
        f"MetaTrainRequest_{name}",
        __config__={"extra": "forbid", "populate_by_name": True},
        family=(Literal[name], Field(description=base["family"].description)),
        family_config=(config_model, Field(default_factory=dict, description=base["family_config"].description)),
        meta_overrides=(dict[str, Any], Field(default_factory=dict, description=base["meta_overrides"].description)),
        should_register=(StrictBool, Field(True, alias="register", description=base["should_register"].description)),
    )


def family_request_schemas(server_only: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the union's schema, the component schemas it refers to), or None without loadable families."""
    variants = [
        _variant(name, entry.family, server_only)
        for name, entry in sorted(discover_families().items())
        if entry.family is not None
    ]
    if not variants:
        return None
    adapter = TypeAdapter(
        Annotated[_union(variants), Field(discriminator="family")] if len(variants) > 1 else variants[0]
    )
    schema = adapter.json_schema(ref_template=REF, by_alias=True, mode="validation")
    return schema, schema.pop("$defs", {})


def _union(variants: list[type]) -> Any:
    from typing import Union

    return Union[tuple(variants)]  # noqa: UP007 - built at run time from the installed families


def install_family_schemas(app: FastAPI) -> None:
    """Replace FastAPI's schema function with one that adds the per-family request variants."""
    settings = app.state.settings

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        built = family_request_schemas(tuple(settings.server_only_family_fields))
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        if built is not None and REQUEST_NAME in components:
            union, definitions = built
            components.update(definitions)
            generic = components[REQUEST_NAME]
            union["description"] = (
                "One variant per installed family (discriminator: `family`); `family_config` is that "
                "family's own schema. " + str(generic.get("description", ""))
            ).strip()
            if "examples" in generic:
                union["examples"] = generic["examples"]
            components[REQUEST_NAME] = union
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
