"""Errors as JSON bodies, and no stack trace in any response.

Handlers render ``{"detail": ...}`` like FastAPI's own; an unexpected exception is logged here
with its traceback and answered with a 500 that only carries an id to find it in the log.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from l2l_api.responses import SafeJSONResponse

logger = logging.getLogger("l2l_api")


class APIError(Exception):
    """An error the client can act on: a status, a message, and extra fields for the body."""

    def __init__(
        self, status_code: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers
        self.extra = extra


def field_errors(exc: ValidationError, *prefix: str) -> list[dict[str, Any]]:
    """A pydantic error list in FastAPI's 422 format, located under ``prefix`` in the body.

    Through pydantic's own JSON so the error context (which may hold exception objects) is
    serialisable; URLs to pydantic's docs are left out.
    """
    errors = json.loads(exc.json(include_url=False))
    for error in errors:
        error["loc"] = [*prefix, *error.get("loc", [])]
    return errors


async def _api_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, APIError)
    return SafeJSONResponse(
        {"detail": exc.detail, **exc.extra}, status_code=exc.status_code, headers=exc.headers
    )


async def _http_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
    return SafeJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


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


async def _validation_error(request: Request, exc: Exception) -> SafeJSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for error in exc.errors():
        error = dict(error)
        error.pop("url", None)
        if "ctx" in error:  # may hold the exception object raised by a validator
            error["ctx"] = {key: _plain(value) for key, value in error["ctx"].items()}
        errors.append(error)
    return SafeJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | type(None) | list | dict) else str(value)


async def _unexpected(request: Request, exc: Exception) -> SafeJSONResponse:
    error_id = uuid.uuid4().hex[:12]
    logger.error("unhandled error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    return SafeJSONResponse(
        {"detail": f"internal server error (id {error_id}; the traceback is in the service log)"},
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
