"""Cluster-scoped objects as the operator's watch delivers them, read without a request.

Every Sandbox reconcile needs its Tenant (and the Datasets it asks for). The operator
already watches Tenants, so a reconcile can take the Tenant from that stream instead
of reading it again. Each entry is trusted for a short time only: a watch that was
interrupted and resumed by re-listing does not report objects deleted meanwhile, so an
entry not refreshed by an event within ``ttl`` seconds is read from the API server again.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import client

from sandbox.kube.apply import get

__all__ = ["DEFAULT_TTL", "WatchedObjects", "strip_managed_fields"]

DEFAULT_TTL = 10.0
"""Seconds an entry is used without an event or a read refreshing it."""


def strip_managed_fields(obj: Any) -> None:
    """Remove ``metadata.managedFields`` from an object kept in memory, in place.

    The field managers' bookkeeping is close to half of a typical object's size and
    nothing the operator keeps an object for reads it.
    """
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(metadata, dict):
        metadata.pop("managedFields", None)


class WatchedObjects:
    """Objects of one cluster-scoped kind by name, fed by watch events and by reads."""

    def __init__(self, kind: str, ttl: float = DEFAULT_TTL) -> None:
        """Cache ``kind`` objects; each entry is used for ``ttl`` seconds after it was seen."""
        self.kind = kind
        self._ttl = ttl
        self._objects: dict[str, tuple[float, dict[str, Any]]] = {}
        self._events = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WatchedObjects(kind={self.kind!r}, entries={len(self._objects)})"

    def observe(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """Take one watch event: ``DELETED`` forgets the object, anything else stores it."""
        name = str((obj.get("metadata") or {}).get("name") or "")
        if not name:
            return
        with self._lock:
            self._events += 1
            if event_type == "DELETED":
                self._objects.pop(name, None)
            else:
                self._objects[name] = (time.monotonic() + self._ttl, copy.deepcopy(dict(obj)))

    def read(self, api: client.ApiClient, name: str) -> dict[str, Any] | None:
        """The object (a copy the caller may change), from the cache or else the API server."""
        with self._lock:
            entry = self._objects.get(name)
            events = self._events
        if entry is not None and entry[0] > time.monotonic():
            return copy.deepcopy(entry[1])
        live = get(api, self.kind, name)
        with self._lock:
            # An event that arrived during the read may be newer than what was read.
            if self._events == events:
                if live is None:
                    self._objects.pop(name, None)
                else:
                    self._objects[name] = (time.monotonic() + self._ttl, copy.deepcopy(live))
        return live
