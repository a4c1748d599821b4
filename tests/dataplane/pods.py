"""Pods and probes for the data-plane tests: busybox clients and servers, TCP checks."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.devenv.images import image_ref

SYSTEM_NS = "regsandbox-system"
BUSYBOX = image_ref("busybox")
SERVER_PORT = 8080

T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns a truthy value (bounded), else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


RESTRICTED_POD: dict[str, Any] = {
    "automountServiceAccountToken": False,
    "enableServiceLinks": False,
    "terminationGracePeriodSeconds": 0,
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}
RESTRICTED_CONTAINER: dict[str, Any] = {
    "image": BUSYBOX,
    "imagePullPolicy": "Never",
    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    "resources": {
        "requests": {"cpu": "10m", "memory": "16Mi"},
        "limits": {"cpu": "100m", "memory": "32Mi"},
    },
}


def pod(
    name: str, namespace: str, command: list[str], labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A pod that passes the ``restricted`` Pod Security Standard and fits a sandbox quota."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {"app": name}},
        "spec": {
            **RESTRICTED_POD,
            "containers": [{"name": "main", **RESTRICTED_CONTAINER, "command": command}],
        },
    }


def client_pod(name: str, namespace: str) -> dict[str, Any]:
    """A pod that sleeps; tests exec probes in it."""
    return pod(name, namespace, ["sleep", "3600"])


def server_pod(name: str, namespace: str) -> dict[str, Any]:
    """busybox httpd on :8080."""
    return pod(name, namespace, ["httpd", "-f", "-p", str(SERVER_PORT), "-h", "/www"])


def service(name: str, namespace: str) -> dict[str, Any]:
    """A ClusterIP Service on port 80 in front of ``server_pod(name)``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": SERVER_PORT}]},
    }


def running(api: client.ApiClient, namespace: str, name: str) -> client.V1Pod | None:
    """The pod when it is Ready (or None)."""
    try:
        obj = client.CoreV1Api(api).read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    conditions = obj.status.conditions or []
    if any(c.type == "Ready" and c.status == "True" for c in conditions):
        return obj
    return None


def wait_running(
    api: client.ApiClient, namespace: str, name: str, timeout: float = 90.0
) -> client.V1Pod:
    """Wait until the pod is Ready; on timeout say what the kubelet reported."""
    try:
        return wait_for(lambda: running(api, namespace, name), timeout, f"pod {namespace}/{name}")
    except TimeoutError:
        obj = client.CoreV1Api(api).read_namespaced_pod(name, namespace)
        raise TimeoutError(f"pod {namespace}/{name} not Ready: {obj.status}") from None


@dataclass(frozen=True)
class Kubectl:
    """kubectl with a kubeconfig; ``exec`` runs a command in a pod."""

    binary: Path
    kubeconfig: Path

    def run(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def exec(
        self, namespace: str, pod_name: str, *command: str
    ) -> subprocess.CompletedProcess[str]:
        return self.run("exec", "-n", namespace, pod_name, "--", *command)

    def connects(self, namespace: str, pod_name: str, host: str, port: int) -> bool:
        """Whether a TCP connection from the pod to host:port opens within 3 seconds.

        busybox ``nc -w 3 HOST PORT -e true`` connects and hangs up at once (Debian's busybox
        wget crashes). The verdict is printed by the pod, so a failing ``kubectl exec``
        is an error here, never a "blocked".
        """
        probe = f"if nc -w 3 {host} {port} -e true; then echo OPEN; else echo CLOSED; fi"
        result = self.exec(namespace, pod_name, "sh", "-c", probe)
        verdict = result.stdout.strip().splitlines()[-1:] if result.stdout.strip() else []
        if result.returncode != 0 or verdict not in (["OPEN"], ["CLOSED"]):
            raise AssertionError(
                f"probe from {namespace}/{pod_name} to {host}:{port} did not run "
                f"(exit {result.returncode}): {result.stdout!r} {result.stderr!r}"
            )
        return verdict == ["OPEN"]
