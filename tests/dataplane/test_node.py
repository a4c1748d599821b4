"""The node itself: what the API server gives it, what it leaves on the host, and cleanup."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.dataplane import NODE_NAME, NODE_PROCESSES, DataPlane
from sandbox.devenv.netns import mounts_under
from sandbox.devenv.processes import processes_under
from sandbox.testing import api_client

from .conftest import host_iptables
from .pods import Kubectl, pod, unique, wait_for, wait_running

pytestmark = [pytest.mark.dataplane, pytest.mark.integration]

SANDBOXCTL = [sys.executable, "-m", "sandbox.cli"]


def test_the_node_is_ready_and_the_kubernetes_service_has_an_endpoint(
    data_plane: ControlPlane, dp_api: client.ApiClient
) -> None:
    node = client.CoreV1Api(dp_api).read_node(NODE_NAME)
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    state = data_plane.load_state()
    assert state is not None
    slices = client.DiscoveryV1Api(dp_api).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes"
    )
    addresses = {a for s in slices.items for e in s.endpoints or [] for a in e.addresses}
    assert state.bind_address in addresses


def test_kubectl_logs_and_exec_reach_the_kubelet(
    dp_api: client.ApiClient, kubectl: Kubectl
) -> None:
    ns = unique("dp-logs")
    core = client.CoreV1Api(dp_api)
    core.create_namespace({"metadata": {"name": ns}})
    try:
        core.create_namespaced_pod(
            ns, pod("talker", ns, ["sh", "-c", "echo hello-node; sleep 3600"])
        )
        wait_running(dp_api, ns, "talker")
        logs = wait_for(
            lambda: (
                (r := kubectl.run("logs", "-n", ns, "talker")).returncode == 0
                and "hello-node" in r.stdout
            ),
            30,
            "kubectl logs",
        )
        assert logs
        result = kubectl.exec(ns, "talker", "echo", "exec-works")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "exec-works"
    finally:
        core.delete_namespace(ns)


def test_the_kubelet_is_confined_to_its_own_node(
    data_plane: ControlPlane, dp_api: client.ApiClient
) -> None:
    """Node authorizer and NodeRestriction: the kubelet's identity is system:node:NAME."""
    kubelet = api_client(data_plane.node.layout.kubeconfig("kubelet"))
    core = client.CoreV1Api(kubelet)
    assert core.read_node(NODE_NAME).metadata.name == NODE_NAME
    ns = unique("dp-secret")
    client.CoreV1Api(dp_api).create_namespace({"metadata": {"name": ns}})
    try:
        client.CoreV1Api(dp_api).create_namespaced_secret(
            ns, {"metadata": {"name": "unrelated"}, "stringData": {"k": "v"}}
        )
        with pytest.raises(ApiException) as info:
            core.read_namespaced_secret("unrelated", ns)
        assert info.value.status == 403
        with pytest.raises(ApiException) as info:
            core.create_node({"metadata": {"name": "another-node"}})
        assert info.value.status == 403
    finally:
        client.CoreV1Api(dp_api).delete_namespace(ns)


def test_status_shows_the_node(data_plane: ControlPlane) -> None:
    result = subprocess.run(
        [*SANDBOXCTL, "dev", "status", "--dir", str(data_plane.directory), "-o", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    node = info["node"]
    assert node["name"] == NODE_NAME
    assert node["ready"] is True
    assert all(p["running"] for p in node["processes"].values())
    assert set(node["processes"]) == set(NODE_PROCESSES)


def _host_snapshot() -> dict[str, object]:
    """The host's iptables, routes, links and /run/netns.

    Links and routes of *other* local nodes (``rsb*`` on ``10.250.0.0/16``, e.g. a data
    plane another test session runs at the same time) are left out; this node's own are
    checked by name in :func:`_leftovers`.
    """

    def run(*cmd: str) -> str:
        return subprocess.run(list(cmd), capture_output=True, text=True, check=False).stdout

    netns = Path("/run/netns")
    links = [line.split(":")[1].strip() for line in run("ip", "-o", "link").splitlines()]
    routes = [r for r in run("ip", "-4", "route").splitlines() if " dev rsb" not in r]
    return {
        "iptables": host_iptables(),
        "routes": sorted(routes),
        "links": sorted(name for name in links if not name.startswith("rsb")),
        "run_netns": sorted(p.name for p in netns.iterdir()) if netns.is_dir() else None,
        # Fixed paths kubelet, the CNI plugins and containerd write unless kept inside.
        "paths": sorted(str(p) for p in _FIXED_PATHS if p.exists()),
    }


_FIXED_PATHS = tuple(
    Path(p)
    for p in (
        "/var/lib/kubelet",
        "/var/lib/cni",
        "/var/lib/containerd",
        "/var/log/pods",
        "/var/log/containers",
        "/etc/cni",
        "/usr/libexec/kubernetes",
    )
)


def _leftovers(directory: Path, node: DataPlane) -> list[str]:
    found: list[str] = []
    procs = processes_under(
        directory, (*NODE_PROCESSES, "etcd", "kube-apiserver", "containerd-shim-runc-v2")
    )
    found += [f"process {pid} ({name})" for pid, name in procs.items()]
    found += [f"mount {m}" for m in mounts_under(directory)]
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        cgroup = hierarchy / node.cgroup_root.lstrip("/")
        if cgroup.exists():
            found.append(f"cgroup {cgroup}")
    if Path("/sys/class/net", node.namespaces.link_name()).exists():
        found.append(f"link {node.namespaces.link_name()}")
    return found


def test_down_after_a_killed_up_leaves_nothing_behind(
    data_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGKILL `dev up --data-plane` once the kubelet runs, then `dev down` cleans it all.

    Runs beside the session's data plane: a second directory is a second node (its own
    namespaces, link and cgroups), and the session's node must be untouched by both.
    """
    directory = tmp_path_factory.mktemp("dp-killed")
    node = DataPlane(directory)
    before = _host_snapshot()
    up = subprocess.Popen(
        [*SANDBOXCTL, "dev", "up", "--data-plane", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (
                "kubelet" in processes_under(node.directory, ("kubelet",)).values()
                or up.poll() is not None
            ),
            240,
            "the kubelet of the second node to start",
        )
        assert up.poll() is None, up.stderr.read().decode() if up.stderr else ""
        up.send_signal(signal.SIGKILL)
        up.wait(timeout=10)
    finally:
        if up.poll() is None:
            up.kill()
    assert _leftovers(directory, node), "the killed up left nothing to clean: test is void"
    result = subprocess.run(
        [*SANDBOXCTL, "dev", "down", "--dir", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert _leftovers(directory, node) == []
    # The host's own state is as it was, apart from nothing.
    deadline = time.monotonic() + 10
    while _host_snapshot() != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _host_snapshot() == before
    # The session's node was not touched.
    assert data_plane.status()["node"]["ready"] is True


def test_up_again_reuses_the_running_node(data_plane: ControlPlane) -> None:
    before = data_plane.node.load_state()
    assert before is not None
    state = ControlPlane(data_plane.directory, data_plane=True).up(timeout=60)
    after = data_plane.node.load_state()
    assert after is not None
    assert state.server == data_plane.load_state().server  # type: ignore[union-attr]
    assert after.pids == before.pids
