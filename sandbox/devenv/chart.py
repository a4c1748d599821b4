"""The Helm chart installed on a local control plane with a node, from local images.

What a platform engineer does on a real cluster, done on the local one: the
``regsandbox`` and ``opa`` images built from the checkout (:mod:`sandbox.devenv.images`)
are imported into the node's containerd, the two Secrets the chart expects are created
(the audit signing key, the gateway's object-store credentials), a volume is provided for
the audit log, and ``helm install`` runs with ``imagePullPolicy: Never``.

The local node has no storage provisioner, so the audit StatefulSet's claim gets a
``hostPath`` PersistentVolume reserved for it, in a directory owned by the image's user
(kubelet does not apply ``fsGroup`` to hostPath volumes). The log the in-cluster audit
service writes is therefore readable, and verifiable, from the host.
"""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.images import image_ref, import_images
from sandbox.devenv.minio import MinioServer
from sandbox.devenv.toolchain import tool_path
from sandbox.errors import ControlPlaneError
from sandbox.kube.apply import apply, get
from sandbox.kube.clients import kube_client

__all__ = [
    "APP_UID",
    "ChartRelease",
    "diagnosis",
    "install_chart",
    "release_ready",
    "uninstall_chart",
    "wait_release_ready",
]

APP_UID = 10001
"""The image's user (the Dockerfile's ``USER``), which the chart runs every pod as."""

_DEFAULT_ORIGIN = "audit.regsandbox.example/log"
"""The chart's default ``audit.origin``."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ChartRelease:
    """An installed release."""

    name: str
    namespace: str
    images: list[str]
    """The local images its pods run."""
    audit_volume: Path
    """Host directory behind the audit service's volume (the log is ``log/`` in it)."""
    kubeconfig: Path
    gateway_replicas: int
    gateway_port: int = 8443
    """The port of the gateway Service (``gateway.port``)."""
    operator_replicas: int = 2
    """Operator replicas (``operator.replicas``; one leads, the others stand by)."""


def _helm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool_path("helm")), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _secret(name: str, namespace: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def install_chart(
    plane: ControlPlane,
    *,
    repo: Path,
    storage: MinioServer,
    directory: Path,
    release: str = "regsandbox",
    namespace: str = "regsandbox-system",
    values: dict[str, Any] | None = None,
    progress: Progress = lambda _m: None,
) -> ChartRelease:
    """Install ``charts/regsandbox`` of ``repo`` on ``plane``'s node; return at once.

    The operator runs with the OPA sidecar (policy engine ``opa``), the gateway may send
    its credentials only to ``storage``; ``values`` override any of it. ``directory``
    keeps the signing key, the values file and the audit volume. Wait for the pods with
    :func:`wait_release_ready`.
    """
    if not plane.data_plane:
        raise ControlPlaneError("the chart's pods need a node: start the plane with data_plane")
    api = kube_client(plane.admin_kubeconfig)
    progress("importing the regsandbox and opa images into the node")
    images = import_images(
        plane.node.layout.containerd_socket, ["regsandbox", "opa"], repo=repo, progress=progress
    )
    directory.mkdir(parents=True, exist_ok=True)
    repository, tag = image_ref("regsandbox", repo).rsplit(":", 1)
    chosen = _merge(
        {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "operator": {
                "policyEngine": "opa",
                "opaSidecar": {"enabled": True, "image": image_ref("opa")},
            },
            "audit": {"storage": "1Gi"},
            "gateway": {"s3Endpoints": [storage.endpoint]},
        },
        values or {},
    )
    apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    key = directory / "signing.key"
    if not key.exists():
        generate_key_file(key, chosen.get("audit", {}).get("origin", _DEFAULT_ORIGIN))
    apply(
        api,
        _secret(
            chosen.get("audit", {}).get("signingKeySecret", "regsandbox-audit-signing-key"),
            namespace,
            {"signing.key": key.read_bytes()},
        ),
    )
    apply(
        api,
        _secret(
            chosen.get("gateway", {}).get("credentialsSecret", "regsandbox-gateway-s3"),
            namespace,
            {
                "REGSANDBOX_GATEWAY_S3_ACCESS_KEY_ID": storage.access_key.encode(),
                "REGSANDBOX_GATEWAY_S3_SECRET_ACCESS_KEY": storage.secret_key.encode(),
            },
        ),
    )
    volume = directory / "audit-volume"
    volume.mkdir(exist_ok=True)
    os.chown(volume, APP_UID, APP_UID)
    volume_name = f"{release}-audit-log"
    core = client.CoreV1Api(api)
    with contextlib.suppress(ApiException):  # a previous install's reservation
        core.delete_persistent_volume(volume_name)
    wait_for_gone = time.monotonic() + 30
    while _exists(core, volume_name) and time.monotonic() < wait_for_gone:
        time.sleep(0.2)
    core.create_persistent_volume(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume_name},
            "spec": {
                "capacity": {"storage": chosen["audit"]["storage"]},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(volume.resolve()), "type": "Directory"},
                "claimRef": {"namespace": namespace, "name": f"data-{release}-audit-0"},
            },
        }
    )
    values_file = directory / "values.yaml"
    values_file.write_text(yaml.safe_dump(chosen, sort_keys=False))
    progress(f"helm install {release} (namespace {namespace})")
    installed = _helm(
        "install",
        release,
        str(repo / "charts" / "regsandbox"),
        "--namespace",
        namespace,
        "--kubeconfig",
        str(plane.admin_kubeconfig),
        "--values",
        str(values_file),
    )
    if installed.returncode != 0:
        raise ControlPlaneError(f"helm install {release} failed: {installed.stderr.strip()}")
    return ChartRelease(
        name=release,
        namespace=namespace,
        images=images,
        audit_volume=volume,
        kubeconfig=plane.admin_kubeconfig,
        gateway_replicas=int(chosen.get("gateway", {}).get("replicas", 2)),
        gateway_port=int(chosen.get("gateway", {}).get("port", 8443)),
        operator_replicas=int(chosen.get("operator", {}).get("replicas", 2)),
    )


def _exists(core: client.CoreV1Api, volume: str) -> bool:
    try:
        core.read_persistent_volume(volume)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _ready_replicas(api: client.ApiClient, kind: str, name: str, namespace: str) -> int:
    obj = get(api, kind, name, namespace) or {}
    return int((obj.get("status") or {}).get("readyReplicas") or 0)


def release_ready(api: client.ApiClient, release: ChartRelease) -> bool:
    """Whether every operator and gateway replica and the audit service are Ready."""
    ns, name = release.namespace, release.name
    return (
        _ready_replicas(api, "Deployment", f"{name}-operator", ns) == release.operator_replicas
        and _ready_replicas(api, "Deployment", f"{name}-gateway", ns) == release.gateway_replicas
        and _ready_replicas(api, "StatefulSet", f"{name}-audit", ns) == 1
    )


def diagnosis(api: client.ApiClient, release: ChartRelease) -> str:
    """Pod phases, container states, log tails and recent events of the release (for errors)."""
    core = client.CoreV1Api(api)
    lines: list[str] = []
    kubectl = [str(tool_path("kubectl")), f"--kubeconfig={release.kubeconfig}"]
    for pod in core.list_namespaced_pod(release.namespace).items:
        lines.append(f"pod {pod.metadata.name}: {pod.status.phase}")
        statuses = (pod.status.init_container_statuses or []) + (
            pod.status.container_statuses or []
        )
        for status in statuses:
            lines.append(f"  {status.name}: ready={status.ready} state={status.state}")
        logs = subprocess.run(
            [*kubectl, "logs", "-n", release.namespace, pod.metadata.name, "--all-containers"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        lines += [f"    | {line}" for line in (logs.stdout + logs.stderr).splitlines()[-15:]]
    for event in core.list_namespaced_event(release.namespace).items[-25:]:
        lines.append(f"event {event.involved_object.name}: {event.reason} {event.message}")
    return "\n".join(lines)


def wait_release_ready(
    api: client.ApiClient, release: ChartRelease, timeout: float = 240.0
) -> float:
    """Wait (bounded) until :func:`release_ready`; seconds waited. On timeout, say why."""
    started = time.monotonic()
    while not release_ready(api, release):
        if time.monotonic() - started > timeout:
            raise ControlPlaneError(
                f"release {release.name} not Ready after {timeout:.0f}s:\n"
                + diagnosis(api, release)
            )
        time.sleep(0.5)
    return time.monotonic() - started


def uninstall_chart(release: ChartRelease) -> None:
    """``helm uninstall`` the release (its PersistentVolume and audit volume stay).

    Does not wait for the objects to be gone: custom resources the operator holds
    finalizers on outlive the operator's own Deployment.
    """
    uninstalled = _helm(
        "uninstall",
        release.name,
        "--namespace",
        release.namespace,
        "--kubeconfig",
        str(release.kubeconfig),
        timeout=120,
    )
    if uninstalled.returncode != 0:
        raise ControlPlaneError(f"helm uninstall {release.name}: {uninstalled.stderr.strip()}")
