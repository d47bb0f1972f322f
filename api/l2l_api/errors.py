"""Errors as JSON bodies, and no stack trace in any response.

Every user-facing error is an :class:`l2l_plugin.errors.L2LError` subclass (the library's, the
registry's, :mod:`l2l_api.service_errors`); :data:`HTTP_ANSWERS` is the one table that says which
status each one is answered with, its ``Retry-After`` and extra body fields. Handlers render
``{"detail": ...}`` like FastAPI's own; an unexpected exception is logged here with its
traceback and answered with a 500 that only carries an id to find it in the log.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException

from l2l_api.registry_adapter import MlflowTimeout
from l2l_api.service_errors import (
    DiskNearlyFull,
    InvalidJobRequest,
    JobAlreadyFinished,
    JobNotFound,
    MlflowUnavailable,
    QueueFull,
    Refused,
    VersionNotFound,
)
from l2l_plugin.families import FamilyLoadError, UnknownFamilyError
from l2l_registry import OptimizerNotFoundError, RegistryError
from l2l_registry.redaction import redact

logger = logging.getLogger("l2l_api")

RETRY_AFTER_SECONDS = 30  # an MLflow call that timed out: the server may be back by then


@dataclass(frozen=True)
class HTTPAnswer:
    status: int
    retry_after: int | None = None  # for errors that do not carry their own (Refused does)
    fields: tuple[str, ...] = ()  # attributes of the error copied into the body


# The most specific class in an error's MRO decides (OptimizerNotFoundError before RegistryError).
HTTP_ANSWERS: dict[type[Exception], HTTPAnswer] = {
    RegistryError: HTTPAnswer(400),  # the registry refused a name or reference
    UnknownFamilyError: HTTPAnswer(404, fields=("available",)),
    JobNotFound: HTTPAnswer(404),
    VersionNotFound: HTTPAnswer(404),
    OptimizerNotFoundError: HTTPAnswer(404),
    FamilyLoadError: HTTPAnswer(409),  # installed, but its plugin does not load
    JobAlreadyFinished: HTTPAnswer(409),
    InvalidJobRequest: HTTPAnswer(422),
    QueueFull: HTTPAnswer(429),
    MlflowUnavailable: HTTPAnswer(503),
    MlflowTimeout: HTTPAnswer(503, retry_after=RETRY_AFTER_SECONDS),
    DiskNearlyFull: HTTPAnswer(503),
}


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """JSON through pydantic's serializer: non-finite floats (a diverged loss, a refused
    ``Infinity`` echoed in a 422) become ``null`` instead of failing the response."""
    return Response(
        to_json(content, inf_nan_mode="null"), status_code=status_code, headers=headers, media_type="application/json"
    )


def answer_for(exc: Exception) -> HTTPAnswer | None:
    return next((HTTP_ANSWERS[cls] for cls in type(exc).__mro__ if cls in HTTP_ANSWERS), None)


async def _user_error(request: Request, exc: Exception) -> Response:
    answer = answer_for(exc)
    assert answer is not None
    if isinstance(exc, InvalidJobRequest):
        return json_response({"detail": _plain_field_errors(exc.errors)}, status_code=answer.status)
    retry_after = exc.retry_after if isinstance(exc, Refused) else answer.retry_after
    body = {"detail": redact(str(exc)), **{name: getattr(exc, name) for name in answer.fields}}
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return json_response(body, status_code=answer.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return json_response({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's)."""
    from starlette.routing import Match

    # Asked per method: FastAPI wraps included routers, so the routes' own method sets are not
    # all visible from the application; a full match for a method means it is served.
    return [
        method
        for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
        if any(route.matches({**request.scope, "method": method})[0] == Match.FULL for route in request.app.routes)
    ]


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return json_response({"detail": _plain_field_errors(exc.errors())}, status_code=422)


def _plain_field_errors(errors: Any) -> list[dict[str, Any]]:
    plain = []
    for error in errors:
        error = dict(error)
        error.pop("url", None)
        if "ctx" in error:  # may hold the exception object raised by a validator
            error["ctx"] = {key: _plain(value) for key, value in error["ctx"].items()}
        plain.append(error)
    return jsonable_encoder(plain)


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None) | list | dict) else str(value)


async def _unexpected(request: Request, exc: Exception) -> Response:
    error_id = uuid.uuid4().hex[:12]
    logger.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    return json_response(
        {"detail": f"internal server error (id {error_id}; the traceback is in the service log)"},
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    for error in HTTP_ANSWERS:
        app.add_exception_handler(error, _user_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
