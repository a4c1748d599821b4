"""Names and labels of the objects regsandbox manages."""

from __future__ import annotations

import hashlib

__all__ = [
    "LABEL_MANAGED_BY",
    "LABEL_SANDBOX",
    "LABEL_SECTOR",
    "LABEL_TENANT",
    "managed_labels",
    "sandbox_id",
    "sandbox_namespace",
    "tenant_namespace",
]

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_TENANT = "regsandbox.io/tenant"
LABEL_SANDBOX = "regsandbox.io/sandbox"
LABEL_SECTOR = "regsandbox.io/sector"

_MAX_DNS_LABEL = 63


def _fit(name: str) -> str:
    """Shorten a DNS label beyond 63 characters, keeping it unique with a hash suffix."""
    if len(name) <= _MAX_DNS_LABEL:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_DNS_LABEL - 9].rstrip('-')}-{digest}"


def tenant_namespace(tenant: str) -> str:
    """Home namespace of a tenant: ``tenant-<name>``."""
    return _fit(f"tenant-{tenant}")


def sandbox_namespace(tenant: str, sandbox: str) -> str:
    """Namespace of a sandbox: ``sbx-<tenant>-<sandbox>``."""
    return _fit(f"sbx-{tenant}-{sandbox}")


def sandbox_id(tenant: str, sandbox: str) -> str:
    """Stable identifier of a sandbox across the platform (keys, audit, storage)."""
    return sandbox_namespace(tenant, sandbox)


def managed_labels(**extra: str) -> dict[str, str]:
    """``managed-by: regsandbox`` plus the given regsandbox.io labels."""
    names = {"tenant": LABEL_TENANT, "sandbox": LABEL_SANDBOX, "sector": LABEL_SECTOR}
    labels = {LABEL_MANAGED_BY: "regsandbox"}
    for key, value in extra.items():
        labels[names.get(key, f"regsandbox.io/{key}")] = value
    return labels
