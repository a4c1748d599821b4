"""Connecting to the API server: a client from a kubeconfig or the in-cluster account,
and installing CRDs (waiting until the API server serves them)."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sandbox.errors import ConfigurationError

__all__ = ["install_crds", "kube_client"]


def kube_client(kubeconfig: Path | None) -> client.ApiClient:
    """An ApiClient from ``kubeconfig``, or from the in-cluster ServiceAccount if None.

    Raises:
        ConfigurationError: the kubeconfig (or the in-cluster account) is unusable.
    """
    try:
        if kubeconfig is None:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        api: client.ApiClient = config.new_client_from_config(config_file=str(kubeconfig))
        return api
    except config.ConfigException as exc:
        raise ConfigurationError(f"cannot configure the Kubernetes client: {exc}") from None


def install_crds(api: client.ApiClient, directory: Path, timeout: float = 30.0) -> None:
    """Create (or update) every CRD in ``directory`` and wait until each is served."""
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
