"""The service's own user-facing errors: what the job layer and the registry calls raise.

They are :class:`l2l_plugin.errors.L2LError` subclasses like the library's and the registry's,
and know nothing of HTTP: :mod:`l2l_api.errors` maps every one of them to a status, headers and
body fields in one table.
"""

from __future__ import annotations

from typing import Any

from l2l_plugin.errors import L2LError


class JobNotFound(L2LError, LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id}")


class JobAlreadyFinished(L2LError):
    """Only queued or running jobs can be cancelled."""


class VersionNotFound(L2LError, LookupError):
    """The registered model has no such version or alias (the message lists what it has)."""


class InvalidJobRequest(L2LError, ValueError):
    """A meta-training request the family's schema, MetaTrainConfig or the service's limits refuse.

    ``errors`` are field errors in FastAPI's format (``type``, ``loc``, ``msg``, ``input``).
    """

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s) in the request")
        self.errors = errors


class Refused(L2LError):
    """Work refused for now, nothing kept: the client may retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueFull(Refused):
    pass


class MlflowUnavailable(Refused):
    """The tracking server is down, misconfigured or did not answer in time."""


class DiskNearlyFull(Refused):
    pass
