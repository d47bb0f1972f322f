"""The one base class for errors a user can act on.

Every package of the project raises subclasses of :class:`L2LError` for bad input, missing
things and refused work: the library (unknown family, unsafe pattern, bad optimizer files), the
registry (:class:`l2l_registry.errors.RegistryError`) and the service's job layer. A command
line catches ``L2LError`` once and prints its message without a traceback; the service maps each
subclass to an HTTP status in one table. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class L2LError(Exception):
    """Something the user can fix or retry: the message says what and, where it can, how."""
