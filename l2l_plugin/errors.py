"""The one base class for errors a user can act on.

Every package of the project raises subclasses of :class:`L2LError` for bad input, missing
things and refused work: the library (unknown family, unsafe pattern, bad optimizer files), the
registry (:class:`l2l_registry.errors.RegistryError`) and the service's job layer. A command
line catches ``L2LError`` once and prints its message without a traceback, exiting with the
error's :attr:`~L2LError.exit_code`; the service maps each subclass to an HTTP status in one
table. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import ClassVar


class L2LError(Exception):
    """Something the user can fix or retry: the message says what and, where it can, how."""

    #: The exit status of a command line that stops on this error.
    exit_code: ClassVar[int] = 1


class UsageError(L2LError):
    """The command asked for what is not there or cannot work together: a family that is not
    installed or does not load, launch options that conflict, a search space with nothing to
    search. Command lines exit with status 2 for these, as for their own usage errors."""

    exit_code: ClassVar[int] = 2
