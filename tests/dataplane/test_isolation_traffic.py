"""Sandbox isolation proven by traffic between real pods on a real node.

Tenants and Sandboxes go through the real operator, so every namespace, NetworkPolicy
and Pod Security label is regsandbox's own. Every "blocked" has a positive control: the
same destination is reached from a pod in a namespace without NetworkPolicies, so a
refusal is the policy's doing, not a missing route or a dead server.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.minio import MinioServer
from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get
from sandbox.provision.names import sandbox_namespace
from sandbox.testing import sandbox_manifest

from .pods import (
    SERVER_PORT,
    Kubectl,
    client_pod,
    pod,
    server_pod,
    service,
    unique,
    wait_for,
    wait_running,
)

pytestmark = [pytest.mark.dataplane, pytest.mark.integration]

EEA_REGION = "onprem:lu-national-1"


class Listener:
    """TCP listeners in the test process on the host end of the node's link."""

    def __init__(self, host: str) -> None:
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self.host = host

    def open(self) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(16)
        sock.settimeout(0.2)
        self._socks.append(sock)
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()
        return int(sock.getsockname()[1])

    def _serve(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for sock in self._socks:
            sock.close()


@dataclass
class World:
    """Two tenants' sandboxes with client and server pods, and an open namespace."""

    host_ip: str
    node_ip: str
    """The node's own address (the kubelet's API listens there)."""
    allowed_port: int
    other_port: int
    apiserver_port: int
    storage_port: int
    a1: str
    """Sandbox namespace of tenant A whose egress allow-list names host_ip:allowed_port."""
    a2: str
    """Another sandbox of tenant A."""
    b1: str
    """A sandbox of tenant B."""
    open_ns: str
    """A namespace with no NetworkPolicy: the positive controls."""
    tenant_a: str
    pod_ips: dict[str, str]
    service_ips: dict[str, str]


def _tenant(api: client.ApiClient, name: str) -> None:
    apply(
        api,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {
                "organisation": f"Org {name}",
                "sector": "finance",
                "jurisdiction": "LU",
                "members": [],
                "attestations": {"supervisoryAuthority": "CSSF"},
            },
        },
    )


def _ready_sandbox(
    api: client.ApiClient, operator: OperatorProcess, tenant: str, **spec: Any
) -> tuple[str, str]:
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(api, "Namespace", home), 60, f"namespace {home}")
    name = unique("sbx")
    body = sandbox_manifest(
        name, tenant, resources={"cpu": "2", "memory": "2Gi", "storage": "1Gi"}, **spec
    )
    apply(api, body)

    def ready() -> bool:
        obj = get(api, "Sandbox", name, home) or {}
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready":
                return bool(cond.get("status") == "True")
        return False

    operator.wait_until(ready, 90, f"sandbox {name} Ready")
    return name, sandbox_namespace(tenant, name)


@pytest.fixture(scope="module")
def world(
    data_plane: ControlPlane,
    dp_api: client.ApiClient,
    dp_operator: OperatorProcess,
    dp_storage: MinioServer,
) -> Iterator[World]:
    state = data_plane.load_state()
    assert state is not None
    host_ip = state.bind_address
    listener = Listener(host_ip)
    allowed, other = listener.open(), listener.open()
    tenant_a, tenant_b = unique("ta"), unique("tb")
    _tenant(dp_api, tenant_a)
    _tenant(dp_api, tenant_b)
    egress = [
        {
            "cidr": f"{host_ip}/32",
            "ports": [allowed],
            "region": EEA_REGION,
            "description": "reference data service",
        }
    ]
    _, a1 = _ready_sandbox(dp_api, dp_operator, tenant_a, egress=egress)
    _, a2 = _ready_sandbox(dp_api, dp_operator, tenant_a)
    _, b1 = _ready_sandbox(dp_api, dp_operator, tenant_b)
    open_ns = unique("dp-open")
    apply(dp_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": open_ns}})

    pods = {
        (a1, "client"): client_pod,
        (a1, "server"): server_pod,
        (a2, "server"): server_pod,
        (b1, "client"): client_pod,
        (b1, "server"): server_pod,
        (open_ns, "client"): client_pod,
        (open_ns, "server"): server_pod,
    }
    core = client.CoreV1Api(dp_api)
    for (ns, name), make in pods.items():
        core.create_namespaced_pod(ns, make(name, ns))
        if name == "server":
            apply(dp_api, service(name, ns))
    pod_ips: dict[str, str] = {}
    for ns, name in pods:
        pod_ips[f"{ns}/{name}"] = wait_running(dp_api, ns, name).status.pod_ip
    service_ips = {
        f"{ns}/server": core.read_namespaced_service("server", ns).spec.cluster_ip
        for ns, name in pods
        if name == "server"
    }
    try:
        yield World(
            host_ip=host_ip,
            node_ip=data_plane.node.load_state().node_ip,  # type: ignore[union-attr]
            allowed_port=allowed,
            other_port=other,
            apiserver_port=data_plane.load_state().apiserver_port,  # type: ignore[union-attr]
            storage_port=int(dp_storage.endpoint.rsplit(":", 1)[1]),
            a1=a1,
            a2=a2,
            b1=b1,
            open_ns=open_ns,
            tenant_a=tenant_a,
            pod_ips=pod_ips,
            service_ips=service_ips,
        )
    finally:
        listener.close()
        delete(dp_api, "Namespace", open_ns)
        for tenant in (tenant_a, tenant_b):
            delete(dp_api, "Tenant", tenant)


def _enforced(kubectl: Kubectl, world: World) -> None:
    """Wait (bounded) until kube-router has programmed the sandbox client's rules.

    The node's policy controller acts on pod and policy events asynchronously; the
    first blocked probe is polled, every later assertion is immediate.
    """
    target = world.pod_ips[f"{world.open_ns}/server"]
    wait_for(
        lambda: not kubectl.connects(world.a1, "client", target, SERVER_PORT),
        60,
        "the sandbox client's egress to be restricted",
    )


def test_positive_controls_reach_every_destination(kubectl: Kubectl, world: World) -> None:
    """From a namespace without policies every destination below answers."""
    ns = world.open_ns
    assert kubectl.connects(ns, "client", world.pod_ips[f"{ns}/server"], SERVER_PORT)
    assert kubectl.connects(ns, "client", world.service_ips[f"{ns}/server"], 80)
    assert kubectl.connects(ns, "client", world.host_ip, world.allowed_port)
    assert kubectl.connects(ns, "client", world.host_ip, world.other_port)
    assert kubectl.connects(ns, "client", world.host_ip, world.apiserver_port)
    assert kubectl.connects(ns, "client", "10.96.0.1", 443)
    assert kubectl.connects(ns, "client", world.host_ip, world.storage_port)
    assert kubectl.connects(ns, "client", world.node_ip, 10250)


def test_allowed_egress_works_and_another_port_on_it_does_not(
    kubectl: Kubectl, world: World
) -> None:
    _enforced(kubectl, world)
    assert kubectl.connects(world.a1, "client", world.host_ip, world.allowed_port)
    assert not kubectl.connects(world.a1, "client", world.host_ip, world.other_port)


def test_no_connection_to_the_api_server(kubectl: Kubectl, world: World) -> None:
    _enforced(kubectl, world)
    assert not kubectl.connects(world.a1, "client", "10.96.0.1", 443)
    assert not kubectl.connects(world.a1, "client", world.host_ip, world.apiserver_port)


def test_no_connection_to_the_kubelet(kubectl: Kubectl, world: World) -> None:
    _enforced(kubectl, world)
    assert not kubectl.connects(world.a1, "client", world.node_ip, 10250)


def test_no_connection_to_the_storage_behind_the_gateway(kubectl: Kubectl, world: World) -> None:
    _enforced(kubectl, world)
    assert not kubectl.connects(world.a1, "client", world.host_ip, world.storage_port)


def test_no_connection_to_another_sandbox_or_tenant(kubectl: Kubectl, world: World) -> None:
    _enforced(kubectl, world)
    for ns in (world.a2, world.b1, world.open_ns):
        pod_ip, svc_ip = world.pod_ips[f"{ns}/server"], world.service_ips[f"{ns}/server"]
        assert not kubectl.connects(world.a1, "client", pod_ip, SERVER_PORT), ns
        assert not kubectl.connects(world.a1, "client", svc_ip, 80), ns


def test_ingress_from_another_tenant_is_blocked(kubectl: Kubectl, world: World) -> None:
    target = world.pod_ips[f"{world.a1}/server"]
    # The server listens: it answers on its own loopback.
    assert kubectl.connects(world.a1, "server", "127.0.0.1", SERVER_PORT)
    wait_for(
        lambda: not kubectl.connects(world.b1, "client", target, SERVER_PORT),
        60,
        "tenant B's client to be kept out of sandbox A",
    )
    assert not kubectl.connects(world.open_ns, "client", target, SERVER_PORT)


def test_cluster_dns_resolves_for_a_sandbox_pod(kubectl: Kubectl, world: World) -> None:
    """The sandbox's DNS egress rule lets its pods use the cluster's CoreDNS."""
    name = f"server.{world.b1}.svc.cluster.local"
    result = kubectl.exec(world.a1, "client", "nslookup", name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert world.service_ips[f"{world.b1}/server"] in result.stdout
    result = kubectl.exec(world.a1, "client", "nslookup", "kubernetes.default.svc.cluster.local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10.96.0.1" in result.stdout


def _refusal(api: client.ApiClient, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as info:
        client.CoreV1Api(api).create_namespaced_pod(body["metadata"]["namespace"], body)
    assert info.value.status == 403, info.value.body
    return str(info.value.body)


def test_privileged_root_and_hostpath_pods_are_refused(
    dp_api: client.ApiClient, world: World
) -> None:
    ns = world.a2
    privileged = client_pod("priv", ns)
    privileged["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    root = client_pod("root", ns)
    root["spec"]["securityContext"] = {
        "runAsUser": 0,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    host_path = client_pod("hostpath", ns)
    host_path["spec"]["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    host_path["spec"]["containers"][0]["volumeMounts"] = [{"name": "host", "mountPath": "/h"}]
    assert "privileged" in _refusal(dp_api, privileged)
    assert "runAsUser=0" in _refusal(dp_api, root) or "runAsNonRoot" in _refusal(dp_api, root)
    assert "hostPath" in _refusal(dp_api, host_path)


def test_an_admitted_pod_runs_restricted(kubectl: Kubectl, world: World) -> None:
    """Checked from inside the running container, not from the API object."""
    assert kubectl.exec(world.a1, "client", "id", "-u").stdout.strip() == "65534"
    status = kubectl.exec(world.a1, "client", "cat", "/proc/self/status").stdout
    fields = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in status.splitlines())
    }
    assert int(fields["CapEff"], 16) == 0
    assert int(fields["CapPrm"], 16) == 0
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"  # SECCOMP_MODE_FILTER: the runtime's default profile


def _pod_processes(cgroup_root: str, uid: str) -> list[Path]:
    marker = uid.replace("-", "_")
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        base = hierarchy / cgroup_root.lstrip("/")
        if base.is_dir():
            found += [
                p
                for p in base.rglob("cgroup.procs")
                if (uid in str(p) or marker in str(p)) and p.read_text().strip()
            ]
    return found


def test_pods_are_gone_when_the_sandbox_namespace_is(
    data_plane: ControlPlane,
    dp_api: client.ApiClient,
    dp_operator: OperatorProcess,
    world: World,
) -> None:
    tenant = world.tenant_a
    name, ns = _ready_sandbox(dp_api, dp_operator, tenant)
    client.CoreV1Api(dp_api).create_namespaced_pod(ns, pod("worker", ns, ["sleep", "3600"]))
    uid = wait_running(dp_api, ns, "worker").metadata.uid
    node = data_plane.node.load_state()
    assert node is not None
    assert _pod_processes(node.cgroup_root, uid), "the pod's processes are not on the node"
    delete(dp_api, "Sandbox", name, f"tenant-{tenant}")
    dp_operator.wait_until(
        lambda: get(dp_api, "Namespace", ns) is None, 120, f"namespace {ns} deleted"
    )
    wait_for(
        lambda: not _pod_processes(node.cgroup_root, uid),
        60,
        "the pod's processes to leave the node",
    )
