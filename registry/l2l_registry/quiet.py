"""Third-party warnings our calls trigger and the user can do nothing about.

MLflow's SQL store maps a relationship with SQLAlchemy's deprecated ``noload`` strategy, so the
first store opened in a process warns ("The ``noload`` loader strategy is deprecated ...") from
inside MLflow. The filter applies only while one of our functions runs (``warnings`` state is
restored afterwards), so a user's own filters and their own MLflow calls are left alone.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

# (message regex, category): matched against the start of the warning's message.
THIRD_PARTY_NOISE: tuple[tuple[str, type[Warning]], ...] = (
    (r"The ``noload`` loader strategy is deprecated", DeprecationWarning),
    (r"The :func:`_orm\.noload` option is deprecated", DeprecationWarning),
)

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def quiet_third_party() -> Iterator[None]:
    with warnings.catch_warnings():
        for message, category in THIRD_PARTY_NOISE:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


def quiet(function: Callable[P, R]) -> Callable[P, R]:
    """Run ``function`` under :func:`quiet_third_party`."""

    @functools.wraps(function)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        with quiet_third_party():
            return function(*args, **kwargs)

    return wrapped
