"""A tenant, a dataset in the local MinIO and a sandbox granted it, for tests and benches.

What the data-plane tests and ``bench/pod_reads.py`` set up before a workload pod reads:
a finance ``Dataset`` in Luxembourg (pseudonymised, fraud detection, with its DORA
register entry), a ``Tenant`` supervised by the CSSF, and a ``Sandbox`` of that tenant
granted the dataset. Waiting is the caller's: every function that waits takes a
``wait(check, timeout, what)`` that polls ``check`` until it returns a truthy value (bounded)
and raises otherwise — e.g. :meth:`sandbox.devenv.operator_process.OperatorProcess.wait_until`,
which also says when the operator died.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from sandbox.api.meta import API_GROUP, API_VERSION
from sandbox.kube.apply import apply, get
from sandbox.provision.names import sandbox_namespace, tenant_namespace

__all__ = [
    "SANDBOX_RESOURCES",
    "Wait",
    "add_tenant_with_dataset",
    "dataset_granted",
    "dataset_manifest",
    "grant_sandbox",
    "sandbox_manifest",
    "tenant_home",
    "tenant_manifest",
]

Wait = Callable[[Callable[[], Any], float, str], Any]
"""``wait(check, timeout, what)``: poll ``check`` until truthy, else raise naming ``what``."""

SANDBOX_RESOURCES = {"cpu": "2", "memory": "2Gi", "storage": "1Gi"}
"""The sandbox quota the data-plane tests and benches ask for (room for one workload pod)."""


def sandbox_manifest(name: str, tenant: str, **spec: Any) -> dict[str, Any]:
    """A Sandbox in ``tenant``'s home namespace: fraud detection on the Luxembourg
    national cluster for seven days; ``spec`` fields are added or replace those."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Sandbox",
        "metadata": {"name": name, "namespace": tenant_namespace(tenant)},
        "spec": {
            "purpose": "fraud-detection",
            "region": "onprem:lu-national-1",
            "lifetime": {"ttl": "7d"},
            **spec,
        },
    }


_REGION = "onprem:lu-national-1"


def dataset_manifest(
    name: str, *, bucket: str, prefix: str, endpoint: str, register_reference: str = "ROI-1"
) -> dict[str, Any]:
    """A pseudonymised finance Dataset in Luxembourg at ``endpoint``/``bucket``/``prefix``.

    DORA: a bank's dataset names its ICT register entry (``register_reference``) and the
    contracted data location.
    """
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "sector": "finance",
            "jurisdiction": "LU",
            "location": {
                "bucket": bucket,
                "prefix": prefix,
                "region": _REGION,
                "endpoint": endpoint,
            },
            "personalData": "pseudonymised",
            "allowedPurposes": ["fraud-detection"],
            "ictThirdParty": {"registerReference": register_reference, "dataLocations": ["LU"]},
        },
    }


def tenant_manifest(name: str, organisation: str | None = None) -> dict[str, Any]:
    """A finance Tenant in Luxembourg supervised by the CSSF (organisation ``Org <name>``)."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {
            "organisation": organisation or f"Org {name}",
            "sector": "finance",
            "jurisdiction": "LU",
            "members": [],
            "attestations": {"supervisoryAuthority": "CSSF"},
        },
    }


def tenant_home(api: client.ApiClient, tenant: str) -> dict[str, Any] | None:
    """The tenant's home namespace once the operator has made it (else None)."""
    return get(api, "Namespace", tenant_namespace(tenant))


def dataset_granted(api: client.ApiClient, tenant: str, sandbox: str, dataset: str) -> bool:
    """Whether the Sandbox's status says ``dataset`` is granted."""
    obj = get(api, "Sandbox", sandbox, tenant_namespace(tenant)) or {}
    datasets = (obj.get("status") or {}).get("datasets") or []
    return any(d["name"] == dataset and d["granted"] for d in datasets)


def add_tenant_with_dataset(
    api: client.ApiClient,
    wait: Wait,
    *,
    tenant: str,
    dataset: dict[str, Any],
    organisation: str | None = None,
    timeout: float = 60.0,
    what: str = "the tenant's home",
) -> None:
    """Apply ``dataset`` (a manifest) and the Tenant, then wait for the tenant's home."""
    apply(api, dataset)
    apply(api, tenant_manifest(tenant, organisation))
    wait(lambda: tenant_home(api, tenant), timeout, what)


def grant_sandbox(
    api: client.ApiClient,
    wait: Wait,
    *,
    tenant: str,
    sandbox: str,
    dataset: str,
    timeout: float,
    what: str = "the dataset grant",
    **spec: Any,
) -> str:
    """Apply a Sandbox asking for ``dataset``, wait until it is granted; its namespace.

    Its quota is :data:`SANDBOX_RESOURCES`; ``spec`` fields (e.g. ``lifetime``, or
    ``resources``) are added to the Sandbox's spec or replace those.
    """
    fields: dict[str, Any] = {
        "resources": SANDBOX_RESOURCES,
        "datasets": [{"name": dataset, "purpose": "fraud-detection"}],
        **spec,
    }
    apply(api, sandbox_manifest(sandbox, tenant, **fields))
    wait(lambda: dataset_granted(api, tenant, sandbox, dataset), timeout, what)
    return sandbox_namespace(tenant, sandbox)
