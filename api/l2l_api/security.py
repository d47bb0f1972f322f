"""Bearer-token authentication of mutating endpoints (the body size limit is FastAPI's max_body_size)."""

from __future__ import annotations

import secrets

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = _bearer = HTTPBearer(auto_error=False, description="Required on POST and DELETE when L2L_API_TOKEN is set.")


def require_token(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    """401 unless the configured token is presented (no token configured: open, with a startup warning)."""
    expected = request.app.state.settings.token_value()
    if expected is None:
        return
    presented = credentials.credentials if credentials is not None else ""
    # compare_digest: the time taken does not reveal how much of the token matched.
    if not secrets.compare_digest(presented.encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def presents_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> bool:
    """Whether the caller may see details: the token is presented, or none is configured."""
    expected = request.app.state.settings.token_value()
    if expected is None:
        return True
    presented = credentials.credentials if credentials is not None else ""
    return secrets.compare_digest(presented.encode(), expected.encode())


def describe_exposure(host: str, token: str | None) -> str | None:
    """A warning when the service listens beyond this machine without a token."""
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        return (
            f"listening on {host} without L2L_API_TOKEN: anyone who can reach this port can start and "
            "cancel meta-training jobs"
        )
    return None
