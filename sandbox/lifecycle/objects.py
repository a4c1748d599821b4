"""Reading the object a reconcile is given: name, namespace, generation, tenant, times."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from sandbox.api.meta import parse_rfc3339
from sandbox.provision.names import tenant_namespace

__all__ = ["object_meta", "parse_time", "problems", "tenant_of"]

_TENANT_PREFIX = "tenant-"


def object_meta(body: Mapping[str, Any]) -> tuple[str, str, int]:
    """Name, namespace and generation of a namespaced object."""
    meta = body["metadata"]
    return str(meta["name"]), str(meta["namespace"]), int(meta.get("generation") or 0)


def tenant_of(namespace: str, *, exact: bool = False) -> str | None:
    """The tenant whose home is ``namespace``, by naming convention.

    With ``exact``, only if that tenant's home namespace is exactly ``namespace``.
    """
    if namespace.startswith(_TENANT_PREFIX) and len(namespace) > len(_TENANT_PREFIX):
        tenant = namespace[len(_TENANT_PREFIX) :]
        return tenant if not exact or tenant_namespace(tenant) == namespace else None
    return None


def parse_time(text: str) -> dt.datetime:
    """A Kubernetes timestamp (RFC 3339, ``Z`` for UTC); one with no time zone is refused."""
    return parse_rfc3339(text)


def problems(exc: ValidationError) -> str:
    """A validation error as ``field.path: message; ...``, for a condition message."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
