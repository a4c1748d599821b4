"""Helpers for testing code against a real local control plane.

Used by regsandbox's own test suite and available to anyone who writes policies,
examples or extensions and wants to test them the same way::

    with running_control_plane(tmp_path) as plane:
        api = api_client(plane.admin_kubeconfig)
        alice = api_client(plane.add_user("alice", ["tenant-a"]))
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client, config

from sandbox.api.meta import API_GROUP, API_VERSION
from sandbox.devenv.controlplane import ControlPlane
from sandbox.provision.names import tenant_namespace

__all__ = ["api_client", "install_crds", "running_control_plane", "sandbox_manifest"]


@contextmanager
def running_control_plane(directory: Path, timeout: float = 120.0) -> Iterator[ControlPlane]:
    """Start a control plane in ``directory`` for the duration of the block."""
    plane = ControlPlane(directory)
    plane.up(timeout=timeout)
    try:
        yield plane
    finally:
        plane.down()


def api_client(kubeconfig: Path) -> client.ApiClient:
    """A kubernetes ApiClient authenticated by the kubeconfig's client certificate."""
    api: client.ApiClient = config.new_client_from_config(config_file=str(kubeconfig))
    return api


def install_crds(api: client.ApiClient, directory: Path, timeout: float = 30.0) -> None:
    """Create (or update) every CRD in ``directory`` and wait until each is served."""
    import time

    import yaml
    from kubernetes.client.rest import ApiException

    ext = client.ApiextensionsV1Api(api)
    names = []
    for path in sorted(directory.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        names.append(body["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = ext.read_custom_resource_definition(body["metadata"]["name"])
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            ext.replace_custom_resource_definition(body["metadata"]["name"], body)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in list(pending):
            crd = ext.read_custom_resource_definition(name)
            conditions = crd.status.conditions or []
            if any(c.type == "Established" and c.status == "True" for c in conditions):
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not established after {timeout}s: {sorted(pending)}")
        time.sleep(0.1)


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
