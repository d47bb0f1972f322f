"""Secrets out of text that people or other systems read: errors, logs, MLflow tags, /health.

A tracking URI may carry credentials (``http://user:password@host``, ``postgresql://u:p@db``) and
ends up in exception messages of mlflow, requests and SQLAlchemy. Everything the service shows
or stores passes through :func:`redact`: the password part of any URL's user info is replaced,
and so is any literal secret the process knows of (its configured token, the passwords of the
URIs it was given, MLflow's credential variables).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"

# scheme://user:password@  (the password may be empty; user info never holds '/', '@' or spaces)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:]*):(?P<secret>[^\s/@]*)@")
# ?password=... / &token=... in query strings and key=value logs
_SECRET_PARAMS = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|token|secret|api[_-]?key|access[_-]?key)=)(?P<secret>[^\s&;,'\"]+)",
    re.IGNORECASE,
)

# Variables whose values are secrets, and variables holding URIs whose passwords are.
SECRET_ENV = ("L2L_API_TOKEN", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY")
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "L2L_API_DATABASE_URL", "MLFLOW_BACKEND_STORE_URI")
MIN_SECRET_LENGTH = 4  # shorter literals would mask ordinary words


def uri_password(uri: str) -> str | None:
    try:
        password = urlsplit(uri).password
    except ValueError:
        return None
    return unquote(password) if password else None


def known_secrets(environ: dict[str, str] | None = None) -> list[str]:
    """The literal secrets of this process's configuration (from the environment)."""
    env = os.environ if environ is None else environ
    found = [env[name] for name in SECRET_ENV if env.get(name)]
    found += [password for name in URI_ENV if env.get(name) and (password := uri_password(env[name]))]
    return sorted({secret for secret in found if len(secret) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` without URL passwords, secret query parameters and the known secrets."""
    if not text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _SECRET_PARAMS.sub(lambda m: f"{m['head']}{MASK}", text)
    for secret in known_secrets() if secrets is None else secrets:
        if secret and len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, MASK)
    return text


_installed = False


def install_log_redaction() -> None:
    """Every log record of this process redacted when it is created (message, args, traceback).

    A record factory rather than a handler filter: records propagate to handlers that others
    install (uvicorn's, a test's), and a factory sees every record before any of them.
    """
    global _installed
    if _installed:
        return
    import logging
    import traceback

    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logging's error to report
            return record
        cleaned = redact(message)
        if cleaned != message:  # untouched records keep their args (uvicorn's access log reads them)
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact(text)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
