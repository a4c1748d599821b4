"""A sandbox workload for the tour: what a training job does with the dataset gateway.

Two shapes of the same thing. On a stack of processes there is no node, so
:class:`TokenWorkload` calls the gateway from this machine with a token the API server
issued for the sandbox's workload identity, bound to a pod that never runs. On a stack
with a node, :class:`PodWorkload` is a real pod in the sandbox namespace, started from the
locally built image, which reads and writes through the gateway's Service with its
projected ServiceAccount token — so the sandbox's NetworkPolicies, Pod Security and quota
all apply to it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.errors import ControlPlaneError
from sandbox.gateway.settings import AUDIENCE
from sandbox.provision.sandbox_plan import WORKLOAD_SERVICE_ACCOUNT

__all__ = [
    "GatewayAnswer",
    "PodWorkload",
    "TokenWorkload",
    "Workload",
    "start_pod_workload",
    "token_workload",
    "workload_pod",
]

TOKEN_DIR = "/var/run/regsandbox"  # noqa: S105 - a mount path, not a secret
"""Where the workload pod's projected gateway token is mounted (file ``token``)."""

_HEAD = 4096
"""Bytes of a response body an answer keeps (the rest is only hashed)."""


@dataclass(frozen=True)
class GatewayAnswer:
    """What the gateway answered one request: status, digest and the start of the body."""

    status: int
    sha256: str
    size: int
    head: bytes

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (the gateway's answers to writes and refusals)."""
        parsed = json.loads(self.head.decode(errors="replace") or "{}")
        return parsed if isinstance(parsed, dict) else {"value": parsed}

    @property
    def text(self) -> str:
        """The start of the body, for messages."""
        return self.head.decode(errors="replace")


class Workload(Protocol):
    """A workload of one sandbox, talking to the gateway as itself."""

    @property
    def description(self) -> str:
        """How the tour names it, e.g. ``pod trainer``."""
        ...

    def get(self, path: str) -> GatewayAnswer:
        """``GET`` a gateway path (``/v1/...``)."""
        ...

    def put(self, path: str, body: bytes) -> GatewayAnswer:
        """``PUT`` ``body`` to a gateway path."""
        ...


@dataclass
class TokenWorkload:
    """Gateway calls from this machine with the workload identity's bound token."""

    gateway_url: str
    token: str
    description: str = "pod trainer, by its bound token; no node here, so it never runs"

    def _send(self, method: str, path: str, body: bytes | None = None) -> GatewayAnswer:
        with httpx.Client(
            base_url=self.gateway_url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        ) as gateway:
            answer = gateway.request(method, path, content=body)
        return GatewayAnswer(
            answer.status_code,
            hashlib.sha256(answer.content).hexdigest(),
            len(answer.content),
            answer.content[:_HEAD],
        )

    def get(self, path: str) -> GatewayAnswer:
        """``GET`` a gateway path."""
        return self._send("GET", path)

    def put(self, path: str, body: bytes) -> GatewayAnswer:
        """``PUT`` ``body`` to a gateway path."""
        return self._send("PUT", path, body)


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def token_workload(api: client.ApiClient, namespace: str, gateway_url: str) -> TokenWorkload:
    """A token for the sandbox's workload identity, bound to a pod that never runs.

    Without a node the pod stays Pending, but it exists, so the API server binds the token
    to it and the gateway names it in every audit entry.
    """
    core = client.CoreV1Api(api)
    pod = core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "trainer"},
            "spec": {
                "serviceAccountName": WORKLOAD_SERVICE_ACCOUNT,
                "containers": [
                    {
                        "name": "train",
                        "image": "registry.example/fraud-trainer:1",
                        "securityContext": {
                            **_container_security(),
                            "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    }
                ],
            },
        },
    )
    ref = client.V1BoundObjectReference(
        kind="Pod", api_version="v1", name="trainer", uid=pod.metadata.uid
    )
    spec = client.V1TokenRequestSpec(
        audiences=[AUDIENCE], expiration_seconds=3600, bound_object_ref=ref
    )
    token = core.create_namespaced_service_account_token(
        WORKLOAD_SERVICE_ACCOUNT, namespace, client.AuthenticationV1TokenRequest(spec=spec)
    )
    return TokenWorkload(gateway_url, str(token.status.token))


_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "500m", "memory": "256Mi"},
}


def workload_pod(
    name: str,
    namespace: str,
    image: str,
    uid: int,
    *,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A pod that passes the ``restricted`` profile and a sandbox's quota and idles.

    It runs as the workload ServiceAccount with no API token mounted, only a projected
    token for the gateway's audience at ``TOKEN_DIR/token``. ``resources`` replaces the
    small default requests and limits.
    """
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
        "spec": {
            "serviceAccountName": WORKLOAD_SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": uid,
                "runAsGroup": uid,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "infinity"],
                    "securityContext": _container_security(),
                    "resources": resources or _RESOURCES,
                    "volumeMounts": [{"name": "token", "mountPath": TOKEN_DIR, "readOnly": True}],
                }
            ],
            "volumes": [
                {
                    "name": "token",
                    "projected": {
                        "sources": [
                            {
                                "serviceAccountToken": {
                                    "audience": AUDIENCE,
                                    "expirationSeconds": 3600,
                                    "path": "token",
                                }
                            }
                        ]
                    },
                }
            ],
        },
    }


# Runs inside the pod with the image's Python: one request, the answer as one JSON line.
_REQUEST = """
import base64, hashlib, json, sys, urllib.error, urllib.request
method, url, token_file = sys.argv[1:4]
body = sys.stdin.buffer.read() if method == "PUT" else None
request = urllib.request.Request(url, data=body, method=method, headers={
    "Authorization": "Bearer " + open(token_file).read().strip()})
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        status, content = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, content = exc.code, exc.read()
except OSError as exc:
    status, content = 0, str(exc).encode()
print(json.dumps({"status": status, "sha256": hashlib.sha256(content).hexdigest(),
                  "size": len(content), "head": base64.b64encode(content[:4096]).decode()}))
"""


@dataclass
class PodWorkload:
    """A running pod of the sandbox; requests run inside it with ``kubectl exec``."""

    kubectl: Path
    kubeconfig: Path
    namespace: str
    pod: str
    gateway_url: str
    """The gateway Service as pods reach it, e.g. ``http://rs-gateway.ns.svc.cluster.local:8443``."""

    @property
    def description(self) -> str:
        """How the tour names it."""
        return f"pod {self.pod} in {self.namespace}"

    def _send(self, method: str, path: str, body: bytes = b"") -> GatewayAnswer:
        ran = subprocess.run(
            [
                str(self.kubectl),
                f"--kubeconfig={self.kubeconfig}",
                "exec",
                "-i",
                "-n",
                self.namespace,
                self.pod,
                "--",
                "python3",
                "-c",
                _REQUEST,
                method,
                f"{self.gateway_url}{path}",
                f"{TOKEN_DIR}/token",
            ],
            input=body,
            capture_output=True,
            timeout=120,
            check=False,
        )
        lines = ran.stdout.decode(errors="replace").strip().splitlines()
        if ran.returncode != 0 or not lines:
            raise ControlPlaneError(
                f"kubectl exec in {self.namespace}/{self.pod} failed ({ran.returncode}): "
                + ran.stderr.decode(errors="replace").strip()
            )
        answer = json.loads(lines[-1])
        return GatewayAnswer(
            int(answer["status"]),
            str(answer["sha256"]),
            int(answer["size"]),
            base64.b64decode(answer["head"]),
        )

    def get(self, path: str) -> GatewayAnswer:
        """``GET`` a gateway path from inside the pod."""
        return self._send("GET", path)

    def put(self, path: str, body: bytes) -> GatewayAnswer:
        """``PUT`` ``body`` (sent on the exec's stdin) to a gateway path from inside the pod."""
        return self._send("PUT", path, body)


def _ready(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    try:
        pod = core.read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    conditions = pod.status.conditions or []
    return pod if any(c.type == "Ready" and c.status == "True" for c in conditions) else None


def start_pod_workload(
    api: client.ApiClient,
    *,
    kubectl: Path,
    kubeconfig: Path,
    namespace: str,
    image: str,
    uid: int,
    gateway_url: str,
    name: str = "trainer",
    timeout: float = 180.0,
) -> PodWorkload:
    """Create the workload pod in ``namespace`` and wait (bounded) until it is Ready."""
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, workload_pod(name, namespace, image, uid))
    deadline = time.monotonic() + timeout
    while _ready(core, namespace, name) is None:
        if time.monotonic() > deadline:
            status = core.read_namespaced_pod(name, namespace).status
            raise ControlPlaneError(
                f"pod {namespace}/{name} not Ready after {timeout:.0f}s: {status}"
            )
        time.sleep(0.5)
    return PodWorkload(kubectl, kubeconfig, namespace, name, gateway_url)
