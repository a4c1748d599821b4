"""Helpers shared by the lifecycle tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kubernetes import client

from sandbox.kube.apply import get
from sandbox.testing import sandbox_manifest

RESOURCES = {"cpu": "2", "memory": "4Gi", "storage": "10Gi"}
"""The resources :func:`sandbox_body` asks for unless told otherwise."""

SYSTEM_NS = "regsandbox-system"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def sandbox_body(name: str, tenant: str, **spec: Any) -> dict[str, Any]:
    return sandbox_manifest(name, tenant, **{"resources": RESOURCES, **spec})


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def wait_namespace(api: client.ApiClient, name: str) -> Callable[[], bool]:
    return lambda: get(api, "Namespace", name) is not None


def ready_sandbox(
    api: client.ApiClient, operator: Any, tenant: str, **spec: Any
) -> tuple[str, str]:
    """Apply a compliant Sandbox for ``tenant`` and wait until Ready; (name, namespace)."""
    from sandbox.kube.apply import apply

    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(api, "Namespace", home), 30, f"namespace {home}")
    name = unique("sbx")
    apply(api, sandbox_body(name, tenant, **spec))

    def ready() -> bool:
        cond = condition(get(api, "Sandbox", name, home), "Ready")
        return bool(cond and cond["status"] == "True")

    operator.wait_until(ready, 60, f"sandbox {name} to be Ready")
    return name, f"sbx-{tenant}-{name}"


@contextmanager
def stray_sandbox(api: client.ApiClient, operator: Any) -> Iterator[dict[str, Any]]:
    """A Sandbox outside any tenant's home, once refused; yields its Ready condition."""
    from sandbox.kube.apply import apply, delete

    ns = unique("stray")
    apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    body = sandbox_body("lost", "x")
    body["metadata"]["namespace"] = ns
    apply(api, body)

    def refused() -> dict[str, Any] | None:
        cond = condition(get(api, "Sandbox", "lost", ns), "Ready")
        return cond if cond and cond["reason"] == "TenantNotFound" else None

    try:
        yield operator.wait_until(refused, 30, "Ready=False/TenantNotFound")
    finally:
        delete(api, "Sandbox", "lost", ns)
        delete(api, "Namespace", ns)
