"""Forced promotion: a human moves ``champion`` past the gate, and the version records it."""

from __future__ import annotations

import datetime as dt
import getpass
import json

from l2l_registry.conventions import (
    CHAMPION_ALIAS,
    PROMOTION_FORCED,
    TAG_FORCED_PROMOTION,
    TAG_PROMOTION,
    model_name,
    version_uri,
)
from l2l_registry.gate import champion_lock
from l2l_registry.listing import champion_version
from l2l_registry.loading import check_model_uri
from l2l_registry.quiet import quiet
from l2l_registry.store import Store, client, configure


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


@quiet
def promote(
    family: str, version: str | int, reason: str | None = None, store: Store | None = None
) -> str | None:
    """Make ``version`` the champion regardless of the gate; returns the previous champion."""
    store = store or configure()
    name, version = model_name(family), str(version)
    check_model_uri(version_uri(family, version), store)  # clear error for unknown model / version
    with champion_lock(name, store):  # the gate's lock: no publish decides against a stale champion
        return _force(name, family, version, reason, store)


def _force(name: str, family: str, version: str, reason: str | None, store: Store) -> str | None:
    previous = champion_version(family, store)
    mlflow_client = client(store)
    record = {
        "by": _user(),
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "previous_champion": previous,
        "reason": reason or "",
    }
    # Tag first: if the alias then fails, the record says forced but the alias shows the truth.
    mlflow_client.set_model_version_tag(
        name, version, TAG_FORCED_PROMOTION, json.dumps(record, sort_keys=True)
    )
    mlflow_client.set_model_version_tag(name, version, TAG_PROMOTION, PROMOTION_FORCED)
    mlflow_client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    return previous
