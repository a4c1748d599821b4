"""Whose a sandbox namespace is: the first sandbox to create it, and nobody else.

A sandbox's namespace and id are ``sbx-<tenant>-<sandbox>``, and both names may contain
hyphens, so two sandboxes of two tenants can map to one name: tenant ``bank`` with
sandbox ``p-q`` and tenant ``bank-p`` with sandbox ``q`` are both ``sbx-bank-p-q``.
The namespace, its key and its StorageClass must then stay the first one's.

Creating the namespace is the claim: the API server lets one create win, and the
namespace carries the tenant and sandbox labels of the sandbox that made it. Every
other sandbox that maps to the same name is refused, and nothing a refused sandbox does
at its end (quarantine, teardown, key destruction) reaches the owner's objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from sandbox.kube.apply import create, get
from sandbox.kube.versions import VersionIndex
from sandbox.lifecycle.drift import holds
from sandbox.provision.names import LABEL_SANDBOX, LABEL_TENANT, sandbox_id, tenant_namespace

__all__ = ["claim_namespace", "namespace_owner", "other_owner", "owned_namespace"]


def namespace_owner(live: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (tenant, sandbox) a live namespace's labels name, if it names both."""
    labels = (live.get("metadata") or {}).get("labels") or {}
    tenant, sandbox = labels.get(LABEL_TENANT), labels.get(LABEL_SANDBOX)
    return (str(tenant), str(sandbox)) if tenant and sandbox else None


def _describe(owner: tuple[str, str] | None) -> str:
    return (
        f"sandbox {owner[1]} of tenant {owner[0]}" if owner else "an object regsandbox did not make"
    )


def owned_namespace(
    api: ApiClient, ns: str, tenant: str, sandbox: str
) -> tuple[dict[str, Any] | None, str | None]:
    """The live namespace if it is this sandbox's, and who else holds it if it is not."""
    live = get(api, "Namespace", ns)
    if live is None:
        return None, None
    owner = namespace_owner(live)
    if owner == (tenant, sandbox):
        return live, None
    return None, _describe(owner)


def claim_namespace(
    api: ApiClient,
    namespace: dict[str, Any],
    tenant: str,
    sandbox: str,
    versions: VersionIndex | None = None,
) -> tuple[str | None, bool]:
    """Create the sandbox's namespace unless it exists: (who else holds it, created).

    A namespace created here is vouched for in ``versions`` as the API server made it,
    so the first drift check does not read it back.
    """
    try:
        created = create(api, namespace)
    except ApiException as exc:
        if exc.status != 409:
            raise
    else:
        if versions is not None and holds(namespace, created):
            versions.vouch(namespace, created)
        return None, True
    live, other = owned_namespace(api, namespace["metadata"]["name"], tenant, sandbox)
    if live is None and other is None:  # deleted in between: the next attempt claims it
        return "a namespace being deleted", False
    return other, False


def other_owner(api: ApiClient, tenant: str, sandbox: str) -> str | None:
    """Another existing Sandbox with this sandbox's id (every other tenant/name split)."""
    sid = sandbox_id(tenant, sandbox)
    body = sid.removeprefix("sbx-")
    for cut in range(1, len(body) - 1):
        if body[cut] != "-":
            continue
        other_tenant, other_name = body[:cut], body[cut + 1 :]
        if (other_tenant, other_name) == (tenant, sandbox):
            continue
        if sandbox_id(other_tenant, other_name) != sid:
            continue
        try:
            found = get(api, "Sandbox", other_name, tenant_namespace(other_tenant))
        except ApiException as exc:
            if exc.status in (400, 422):  # not a valid name for that split
                continue
            raise
        if found is not None:
            return _describe((other_tenant, other_name))
    return None
