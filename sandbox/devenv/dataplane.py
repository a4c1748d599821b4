"""A single-node data plane for the local control plane: pods that really run.

``DataPlane(control_plane_dir)`` adds one node to a :class:`~sandbox.devenv.controlplane.
ControlPlane` started with ``data_plane=True``: containerd (Debian's, with runc and
Debian's CNI plugins), kubelet, kube-proxy (iptables), kube-router (NetworkPolicy
controller only) and CoreDNS as the ``kube-dns`` pods, plus kube-scheduler. The node's
processes and pods run in a network namespace and a private mount namespace of their
own (:mod:`sandbox.devenv.netns`); the host keeps its iptables, routes and
``/run/netns``. Pods get the locally built images (:mod:`sandbox.devenv.images`), never
a registry's.

The layout, under the control plane's directory::

    DIR/node/state.json   addresses, cgroup root and PIDs of the node processes
    DIR/node/ns/          the pinned namespaces (bind mounts; removed by down)
    DIR/node/etc/         containerd, kubelet and kube-proxy configuration
    DIR/node/pki/         node certificates and kubeconfigs
    DIR/node/logs/        one log per process
    DIR/node/containerd/, kubelet/, cni/, run/   runtime state (removed by down)

``down()`` stops every process of the node (found by PID, by the namespaces they are
in, by the directory in their arguments and by the node's cgroups, so also after a
killed ``up``), removes the pods' cgroups, the namespaces and the host link.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import urllib3
from pydantic import BaseModel, Field

from sandbox.devenv import processes
from sandbox.devenv.kubeconfig import write_kubeconfig
from sandbox.devenv.netns import HostLink, NodeNamespaces, mounts_under
from sandbox.devenv.nodeconfig import (
    CNI_BIN_DIR,
    KUBE_ROUTER_USER,
    NODE_NAME,
    NodeLayout,
    cni_config,
    containerd_config,
    coredns_objects,
    kube_proxy_config,
    kubelet_config,
    node_rbac,
)
from sandbox.devenv.pki import CertificateAuthority
from sandbox.devenv.toolchain import tool_path
from sandbox.errors import ControlPlaneError, SandboxError, ToolBuildError

__all__ = [
    "NODE_NAME",
    "NODE_PROCESSES",
    "NODE_TOOLS",
    "DataPlane",
    "DataPlaneUnavailableError",
    "NodeState",
    "unavailable_reason",
]

NODE_TOOLS = ("kubelet", "kube-proxy", "kube-scheduler", "kube-router", "coredns")
"""Pinned tools the node needs besides the control plane's."""

NODE_PROCESSES = ("kube-scheduler", "containerd", "kubelet", "kube-proxy", "kube-router")
"""Node processes in start order (stopped in reverse)."""

_SYSTEM_COMMANDS = ("containerd", "runc", "ctr", "ip", "iptables", "ipset", "nsenter", "unshare")
_CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
_POD_IMAGES = ("pause", "busybox", "coredns")
"""Images imported into every node: the pod sandbox, test clients/servers, cluster DNS."""

Progress = Callable[[str], None]

_API_TIMEOUT = 5.0
"""Seconds per API request while waiting for the node: a stuck request must not outlast
the start-up deadline (an overloaded API server can hold a connection indefinitely)."""


class DataPlaneUnavailableError(SandboxError):
    """This machine cannot run the data plane; the message says why."""


class NodeState(BaseModel):
    """What a running node needs to be found, used and stopped."""

    node_name: str = NODE_NAME
    host_interface: str
    host_ip: str
    node_ip: str
    link_network: str
    cgroup_root: str
    pids: dict[str, int] = Field(default_factory=dict)
    images: list[str] = Field(default_factory=list)
    ready: bool = False


def _cgroup_mounts() -> list[Path]:
    """Every cgroup (v1) and cgroup2 mount point of this mount namespace."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fstype = right.split()[0] if right else ""
            if fstype in ("cgroup", "cgroup2"):
                found.append(Path(left.split()[4]))
    return found


def unavailable_reason() -> str | None:
    """Why this machine cannot run the data plane, or None when it can.

    Checks what ``up --data-plane`` needs before it touches anything: root, the system
    commands and CNI plugins, the pinned node tools, a writable cgroup hierarchy and
    the right to make network and mount namespaces.
    """
    if os.geteuid() != 0:
        return "the data plane needs root (network namespaces, cgroups, iptables)"
    missing = [c for c in _SYSTEM_COMMANDS if shutil.which(c) is None]
    if missing:
        return (
            f"missing commands: {', '.join(missing)} "
            "(run `make deps`: apt packages containerd runc iptables ipset iproute2 util-linux)"
        )
    plugins = [p for p in _CNI_PLUGINS if not (CNI_BIN_DIR / p).is_file()]
    if plugins:
        return f"missing CNI plugins in {CNI_BIN_DIR}: {', '.join(plugins)} (`make deps`)"
    for tool in NODE_TOOLS:
        try:
            tool_path(tool)
        except (ToolBuildError, SandboxError) as exc:
            return f"{exc} (the node tools: {', '.join(NODE_TOOLS)})"
    mounts = [m for m in _cgroup_mounts() if m.name in ("pids", "memory", "cpu")]
    if not mounts:
        return "no cgroup v1 pids/memory/cpu hierarchy is mounted under /sys/fs/cgroup"
    probe = mounts[0] / f"regsandbox-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return f"the cgroup hierarchy {mounts[0]} is not writable ({exc.strerror})"
    result = subprocess.run(
        ["unshare", "--net", "--mount", "--", "true"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        return f"cannot create network and mount namespaces: {result.stderr.strip()}"
    return None


def _kill(pids: Iterable[int], timeout: float) -> list[int]:
    return processes.terminate(pids, timeout=timeout)


def _procs_in_namespace(inode: int, kind: str) -> list[int]:
    """PIDs whose ``kind`` namespace (``net`` or ``mnt``) has ``inode``."""
    found: list[int] = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if (entry / "ns" / kind).stat().st_ino == inode:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _succeeds(cmd: list[str], timeout: float = 10.0) -> bool:
    """Whether ``cmd`` exits 0 within ``timeout`` seconds."""
    try:
        return (
            subprocess.run(cmd, capture_output=True, check=False, timeout=timeout).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


class DataPlane:
    """The node of the control plane rooted at ``control_plane_dir``."""

    def __init__(self, control_plane_dir: Path) -> None:
        """Keep the node's state in ``control_plane_dir/node``."""
        self.directory = control_plane_dir.resolve() / "node"
        self.layout = NodeLayout(self.directory)
        self.namespaces = NodeNamespaces(self.directory)
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:10]
        self.cgroup_root = f"/regsandbox-{digest}"

    @property
    def state_file(self) -> Path:
        """JSON file with addresses and PIDs."""
        return self.directory / "state.json"

    def load_state(self) -> NodeState | None:
        """The recorded state, or None when no node was started here."""
        try:
            return NodeState.model_validate_json(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None

    def _save_state(self, state: NodeState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json(indent=2))
        tmp.replace(self.state_file)

    # -- start ------------------------------------------------------------------------
    def prepare(self, progress: Progress = lambda _m: None) -> HostLink:
        """Check the machine, clear leftovers and make the namespaces and the link.

        Returns the link: the API server binds to its host address before :meth:`start`.
        """
        reason = unavailable_reason()
        if reason:
            raise DataPlaneUnavailableError(reason)
        if self.present():
            progress("cleaning up a previous node")
            self.down()
        for stale in ("etc", "pki", "logs", "containerd", "kubelet", "cni", "run"):
            shutil.rmtree(self.directory / stale, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        progress("making the node's network and mount namespaces")
        link = self.namespaces.create()
        self._save_state(
            NodeState(
                host_interface=link.host_interface,
                host_ip=link.host_ip,
                node_ip=link.node_ip,
                link_network=link.network,
                cgroup_root=self.cgroup_root,
            )
        )
        return link

    def start(
        self,
        *,
        server: str,
        pki_dir: Path,
        admin_kubeconfig: Path,
        service_cidr: str,
        deadline: float,
        progress: Progress = lambda _m: None,
    ) -> NodeState:
        """Start the node against the API server at ``server``; wait until pods can run."""
        state = self.load_state()
        if state is None:
            raise ControlPlaneError("the node namespaces were not prepared")
        from sandbox.devenv.images import image_ref, import_images
        from sandbox.kube.apply import apply
        from sandbox.kube.clients import kube_client

        binaries = {name: tool_path(name) for name in NODE_TOOLS}
        self._make_pki(pki_dir, server, state)
        self._write_configs(state, pki_dir)
        self._make_cgroups(state.cgroup_root)
        api = kube_client(admin_kubeconfig)
        for obj in node_rbac():
            apply(api, obj)

        started: dict[str, subprocess.Popen[bytes]] = {}

        def launch(name: str, argv: list[str], in_node: bool = True) -> None:
            progress(f"starting {name}")
            cmd = self.namespaces.command(argv) if in_node else argv
            proc = processes.spawn(cmd, self.layout.logs / f"{name}.log")
            started[name] = proc
            state.pids[name] = proc.pid
            self._save_state(state)

        sched_kc = self.layout.kubeconfig("kube-scheduler")
        launch(
            "kube-scheduler",
            [
                str(tool_path("kube-scheduler")),
                f"--kubeconfig={sched_kc}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                "--v=1",
            ],
            in_node=False,
        )
        launch(
            "containerd",
            [
                shutil.which("containerd") or "containerd",
                "--config",
                str(self.layout.etc / "containerd.toml"),
            ],
        )
        self._wait(
            "containerd",
            started,
            deadline,
            lambda: self._ctr_ready(),
        )
        progress("importing the pod images")
        state.images = import_images(self.layout.containerd_socket, _POD_IMAGES, progress=progress)
        self._save_state(state)
        launch(
            "kubelet",
            [
                str(binaries["kubelet"]),
                f"--config={self.layout.etc / 'kubelet.yaml'}",
                f"--kubeconfig={self.layout.kubeconfig('kubelet')}",
                f"--root-dir={self.layout.kubelet_root}",
                f"--node-ip={state.node_ip}",
                f"--hostname-override={state.node_name}",
                "--v=1",
            ],
        )
        self._wait("kubelet", started, deadline, lambda: self._node_ready(api))
        launch(
            "kube-proxy",
            [
                str(binaries["kube-proxy"]),
                f"--config={self.layout.etc / 'kube-proxy.yaml'}",
                "--v=1",
            ],
        )
        launch(
            "kube-router",
            [
                str(binaries["kube-router"]),
                f"--kubeconfig={self.layout.kubeconfig('kube-router')}",
                f"--hostname-override={state.node_name}",
                "--run-firewall=true",
                "--run-router=false",
                "--run-service-proxy=false",
                "--enable-cni=false",
                f"--service-cluster-ip-range={service_cidr}",
                "--health-port=0",
                "--metrics-port=0",
                "--v=1",
            ],
        )
        progress("starting CoreDNS (kube-system/coredns)")
        for obj in coredns_objects(image_ref("coredns")):
            apply(api, obj)
        self._wait("CoreDNS", started, deadline, lambda: self._dns_ready(api))
        self._wait("kube-proxy", started, deadline, lambda: self._healthz(10256))
        state.ready = True
        self._save_state(state)
        return state

    # -- stop -------------------------------------------------------------------------
    def present(self) -> bool:
        """Whether anything of a node (state, namespaces, link, cgroups) is left here."""
        if self.state_file.exists() or mounts_under(self.directory):
            return True
        if Path("/sys/class/net", self.namespaces.link_name()).exists():
            return True
        return any((m / self.cgroup_root.lstrip("/")).exists() for m in _cgroup_mounts())

    def down(self, timeout: float = 5.0) -> list[str]:
        """Stop every process of the node and remove its cgroups, namespaces and link.

        Safe to call repeatedly and after a killed ``up``. Returns the names of the node
        processes that were running.
        """
        # Every node process names the node's directory in its arguments, so this finds
        # them whether or not their PIDs were recorded.
        found = processes.processes_under(self.directory, NODE_PROCESSES)
        stopped: list[str] = []
        for name in ("kube-scheduler", "kube-router", "kube-proxy", "kubelet"):
            pids = [pid for pid, n in found.items() if n == name]
            if _kill(pids, timeout):
                stopped.append(name)
        # The pods: every process in the node's cgroups (they are disposable).
        self._kill_cgroup_members()
        # containerd, its shims and anything else still inside the node's namespaces.
        inside: set[int] = {pid for pid, n in found.items() if n == "containerd"}
        for kind in ("net", "mnt"):
            inode = self.namespaces.inode(kind)
            if inode is not None:
                inside.update(_procs_in_namespace(inode, kind))
        inside.update(processes.processes_under(self.directory, ("containerd-shim-runc-v2",)))
        if _kill(sorted(inside), timeout) and any(n == "containerd" for n in found.values()):
            stopped.append("containerd")
        self._kill_cgroup_members()
        # Everything below runs even if a step fails, so one stuck cgroup does not leave
        # the namespaces and the link behind; the first failure is raised at the end.
        failure: ControlPlaneError | None = None
        try:
            self._remove_cgroups()
        except ControlPlaneError as exc:
            failure = exc
        self.namespaces.destroy()
        for point in mounts_under(self.directory):
            if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True)
        if mounts_under(self.directory) and failure is None:
            failure = ControlPlaneError(f"mounts left under {self.directory}")
        for stale in ("containerd", "kubelet", "cni", "run"):
            shutil.rmtree(self.directory / stale, ignore_errors=True)
        if failure is not None:
            raise failure
        self.state_file.unlink(missing_ok=True)
        return stopped

    def running(self) -> bool:
        """Whether the node was started to the end and all its processes still run."""
        state = self.load_state()
        return bool(
            state
            and state.ready
            and state.pids
            and all(processes.is_running(pid) for pid in state.pids.values())
        )

    def status(self) -> dict[str, Any] | None:
        """The node's addresses and processes, or None when no node was started here."""
        state = self.load_state()
        if state is None:
            return None
        return {
            "name": state.node_name,
            "nodeIP": state.node_ip,
            "hostIP": state.host_ip,
            "hostInterface": state.host_interface,
            "cgroupRoot": state.cgroup_root,
            "images": state.images,
            "processes": {
                name: {"pid": pid, "running": processes.is_running(pid)}
                for name, pid in state.pids.items()
            },
            "started": state.ready,
        }

    # -- internals --------------------------------------------------------------------
    def _make_pki(self, pki_dir: Path, server: str, state: NodeState) -> None:
        ca = CertificateAuthority.load(pki_dir)
        pki = self.layout.pki
        ca.issue_server(
            state.node_name, dns=[state.node_name], ips=[state.node_ip, "127.0.0.1"]
        ).write(pki, "kubelet-serving")
        identities = {
            "kubelet": (f"system:node:{state.node_name}", ["system:nodes"]),
            "kube-proxy": ("system:kube-proxy", []),
            "kube-scheduler": ("system:kube-scheduler", []),
            "kube-router": (KUBE_ROUTER_USER, []),
        }
        for component, (user, groups) in identities.items():
            cert = ca.issue_client(user, groups)
            write_kubeconfig(self.layout.kubeconfig(component), server, ca.cert_pem, user, cert)

    def _write_configs(self, state: NodeState, pki_dir: Path) -> None:
        from sandbox.devenv.images import image_ref

        layout = self.layout
        for path in (layout.etc, layout.cni_conf_dir, layout.cni_ipam_dir, layout.run, layout.logs):
            path.mkdir(parents=True, exist_ok=True)
        runc = shutil.which("runc") or "/usr/sbin/runc"
        (layout.etc / "containerd.toml").write_text(
            containerd_config(layout, image_ref("pause"), runc)
        )
        (layout.cni_conf_dir / "10-regsandbox.conflist").write_text(cni_config(layout))
        (layout.etc / "kubelet.yaml").write_text(
            kubelet_config(layout, state.node_ip, state.cgroup_root, pki_dir / "ca.crt")
        )
        (layout.etc / "kube-proxy.yaml").write_text(kube_proxy_config(layout))

    def _make_cgroups(self, root: str) -> None:
        """Create the node's cgroup root in every hierarchy (cpuset seeded from its parent)."""
        for mount in _cgroup_mounts():
            path = mount / root.lstrip("/")
            path.mkdir(exist_ok=True)
            for knob in ("cpuset.cpus", "cpuset.mems"):
                mine, parent = path / knob, mount / knob
                if mine.exists() and not mine.read_text().strip():
                    mine.write_text(parent.read_text())

    def _cgroup_dirs(self) -> list[Path]:
        """Every cgroup directory of the node, deepest first."""
        found: list[Path] = []
        for mount in _cgroup_mounts():
            root = mount / self.cgroup_root.lstrip("/")
            # os.walk skips directories that vanish while it looks (the kubelet and runc
            # remove cgroups while the node stops); rglob would raise.
            for top, dirs, _files in os.walk(root):
                found.extend(Path(top, d) for d in dirs)
            if root.is_dir():
                found.append(root)
        return sorted(found, key=lambda p: len(p.parts), reverse=True)

    def _kill_cgroup_members(self) -> None:
        pids: set[int] = set()
        for cgroup in self._cgroup_dirs():
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in (cgroup / "cgroup.procs").read_text().split())
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _kill(pids, 5.0)

    def _remove_cgroups(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = self._cgroup_dirs()
            for cgroup in left:
                with contextlib.suppress(OSError):
                    cgroup.rmdir()
            left = self._cgroup_dirs()
            if not left:
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"could not remove the node's cgroups: {', '.join(map(str, left[:5]))}"
                )
            self._kill_cgroup_members()
            time.sleep(0.1)

    def _wait(
        self,
        what: str,
        started: dict[str, subprocess.Popen[bytes]],
        deadline: float,
        ready: Callable[[], bool],
    ) -> None:
        while True:
            for name, proc in started.items():
                code = proc.poll()
                if code is not None:
                    log = self.layout.logs / f"{name}.log"
                    raise ControlPlaneError(
                        f"{name} exited with code {code} during start-up; last lines of {log}:\n"
                        + processes.log_tail(log)
                    )
            if ready():
                return
            if time.monotonic() > deadline:
                logs = [self.layout.logs / f"{n}.log" for n in started]
                tail = "\n".join(
                    f"--- {log}\n{processes.log_tail(log, 8)}" for log in logs if log.exists()
                )
                raise ControlPlaneError(f"timed out waiting for {what}; node logs:\n{tail}")
            time.sleep(0.2)

    def _ctr_ready(self) -> bool:
        return _succeeds(["ctr", "--address", str(self.layout.containerd_socket), "version"])

    def _healthz(self, port: int) -> bool:
        return _succeeds(
            self.namespaces.command(
                [
                    "python3",
                    "-c",
                    "import sys,urllib.request;"
                    f"sys.exit(urllib.request.urlopen('http://127.0.0.1:{port}/healthz',"
                    "timeout=1).status!=200)",
                ]
            )
        )

    def _node_ready(self, api: Any) -> bool:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            node = client.CoreV1Api(api).read_node(NODE_NAME, _request_timeout=_API_TIMEOUT)
        except (ApiException, urllib3.exceptions.HTTPError):
            return False
        conditions = node.status.conditions or []
        return any(c.type == "Ready" and c.status == "True" for c in conditions)

    def _dns_ready(self, api: Any) -> bool:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            pods = client.CoreV1Api(api).list_namespaced_pod(
                "kube-system", label_selector="k8s-app=kube-dns", _request_timeout=_API_TIMEOUT
            )
        except (ApiException, urllib3.exceptions.HTTPError):
            return False
        for pod in pods.items:
            conditions = pod.status.conditions or []
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                return True
        return False
