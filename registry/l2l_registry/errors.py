"""Errors a user of the registry can act on (the CLI prints them without a traceback)."""

from __future__ import annotations

from l2l_plugin.errors import L2LError


class RegistryError(L2LError, RuntimeError):
    """Base class: something about the registry or a model URI is wrong."""


class OptimizerNotFoundError(RegistryError, LookupError):
    """The URI names no model, version or alias (the message lists what exists)."""


class PublishError(RegistryError):
    """Publishing a meta-training run failed; no model version was created."""


class FamilyMismatchWarning(UserWarning):
    """An optimizer meta-trained on one family is used for a model of another."""


def is_not_found(exc: BaseException) -> bool:
    """An MlflowException meaning "no such model / version / alias / run".

    The stores disagree on the code: a missing alias is INVALID_PARAMETER_VALUE in the SQL
    store, a missing model RESOURCE_DOES_NOT_EXIST; the message says "not found" in both.
    """
    code = getattr(exc, "error_code", None)
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "not found" in str(exc).lower()
    )
