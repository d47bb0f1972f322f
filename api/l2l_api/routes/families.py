"""GET /families and /families/{name}: every discovered family, its JSON Schema and defaults."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Response
from pydantic import ValidationError
from pydantic_core import to_json, to_jsonable_python

from l2l_api.schemas import ErrorOut, FamilyOut
from l2l_plugin.families import FamilyEntry, TaskFamily, UnknownFamilyError, discover_families

router = APIRouter(tags=["families"])


def _defaults(family: type[TaskFamily]) -> dict[str, Any]:
    try:
        return family().model_dump(mode="json")
    except ValidationError:  # some fields are required: list the defaults that exist
        return {
            name: to_jsonable_python(field.get_default(call_default_factory=True))
            for name, field in family.model_fields.items()
            if not field.is_required()
        }


def family_out(entry: FamilyEntry) -> FamilyOut:
    family = entry.family
    return FamilyOut(
        name=entry.name,
        description=entry.description,
        distribution=entry.distribution,
        target=entry.target,
        json_schema=entry.schema(),
        defaults=_defaults(family) if family is not None else None,
        meta_train_defaults=to_jsonable_python(family.meta_train_defaults) if family is not None else {},
        error=entry.error,
    )


# The families are fixed for a process (discovery is cached until refresh_families()), so their
# JSON is rendered once per discovery result: schemas of every family on each request cost
# milliseconds, the cached body microseconds.
_rendered: tuple[object, bytes] | None = None


def _families_body() -> bytes:
    global _rendered
    families = discover_families()
    if _rendered is None or _rendered[0] is not families:
        items = [family_out(entry).model_dump(mode="json", by_alias=True) for entry in families.values()]
        _rendered = (families, to_json(items, inf_nan_mode="null"))
    return _rendered[1]


@router.get("/families", response_model=list[FamilyOut], summary="Every installed task family")
async def list_families() -> Response:  # async: no thread hop for a cached body
    return Response(_families_body(), media_type="application/json")


@router.get(
    "/families/{name}",
    response_model=FamilyOut,
    responses={404: {"model": ErrorOut, "description": "No such family; `available` lists the names."}},
    summary="One family: JSON Schema, defaults, load error",
)
def get_family(name: str = Path(max_length=200)) -> FamilyOut:
    families = discover_families()
    entry = families.get(name)
    if entry is None:
        raise UnknownFamilyError(name, list(families))
    return family_out(entry)
