"""A network namespace and a private mount namespace for the local node.

The data plane's processes (containerd, kubelet, kube-proxy, kube-router and the pods)
run inside one network namespace and one mount namespace made here, so their iptables
rules, routes, bridge, pod network namespaces and mounts never touch the host. Both
namespaces are pinned by bind mounts on files under the data plane's directory (not in
``/run/netns``), which makes them findable and removable by path alone, also after a
killed ``up``.

The only thing on the host side is one end of a veth pair on a private /30 picked from
the directory's path: the host end carries the address the API server binds to, the
namespace end is the node's address. Inside the mount namespace ``/run``, ``/var/log``
and ``/var/lib`` are fresh tmpfs mounts, so containerd's shim sockets, runc state, pod
logs and the few fixed paths of kubelet and the CNI plugins vanish with the namespace.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sandbox.errors import ControlPlaneError

__all__ = ["NODE_INTERFACE", "HostLink", "NodeNamespaces", "mounts_under"]

NODE_INTERFACE = "node0"
"""Name of the node's interface inside its network namespace."""

_HIDDEN = (Path("/run"), Path("/var/log"), Path("/var/lib"))
"""Host directories the node's mount namespace covers with fresh tmpfs mounts."""

_LINK_POOL = ipaddress.ip_network("10.250.0.0/16")
"""Private range the /30 links are carved from (16384 candidates)."""


@dataclass(frozen=True)
class HostLink:
    """The veth pair joining the host and the node namespace."""

    host_interface: str
    """Host-side interface name (unique per directory, at most 15 characters)."""
    host_ip: str
    """Address of the host end; the API server binds to it."""
    node_ip: str
    """Address of the namespace end: the node's InternalIP."""
    network: str
    """The /30 both addresses belong to."""

    @classmethod
    def for_directory(cls, directory: Path, taken: Sequence[str] = ()) -> HostLink:
        """A link whose name and /30 derive from ``directory``, avoiding ``taken`` networks."""
        digest = hashlib.sha256(str(directory.resolve()).encode()).digest()
        start = int.from_bytes(digest[:4], "big")
        occupied = [ipaddress.ip_network(n, strict=False) for n in taken]
        subnets = 1 << (30 - _LINK_POOL.prefixlen)
        for offset in range(subnets):
            index = (start + offset) % subnets
            net = ipaddress.ip_network(
                (int(_LINK_POOL.network_address) + index * 4, 30), strict=True
            )
            if any(net.overlaps(o) for o in occupied):
                continue
            hosts = list(net.hosts())
            return cls(
                host_interface=f"rsb{digest[:4].hex()}",
                host_ip=str(hosts[0]),
                node_ip=str(hosts[1]),
                network=str(net),
            )
        raise ControlPlaneError(f"no free /30 left in {_LINK_POOL} for the node link")


def mounts_under(directory: Path) -> list[Path]:
    """Mount points of this mount namespace at or below ``directory``, deepest first."""
    root = str(directory.resolve())
    found: list[Path] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        if point == root or point.startswith(root + os.sep):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def _run(cmd: Sequence[str], what: str) -> str:
    result = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise ControlPlaneError(f"{what} failed: `{' '.join(cmd)}`: {detail}")
    return result.stdout


class NodeNamespaces:
    """The pinned network and mount namespaces of one node, under ``directory/ns``."""

    def __init__(self, directory: Path) -> None:
        """Keep the namespace files in ``directory/ns``."""
        self.directory = directory.resolve()
        self.ns_dir = self.directory / "ns"
        self.net_file = self.ns_dir / "net"
        self.mnt_file = self.ns_dir / "mnt"

    def link(self) -> HostLink:
        """The host link of this node (the same for the same directory)."""
        return HostLink.for_directory(self.directory, _host_networks(exclude=self.link_name()))

    def link_name(self) -> str:
        """The host-side interface name of this node's link."""
        return HostLink.for_directory(self.directory).host_interface

    def exists(self) -> bool:
        """Whether both namespace files are pinned."""
        points = set(mounts_under(self.ns_dir))
        return self.net_file in points and self.mnt_file in points

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped to run inside both namespaces (``nsenter`` execs it in place)."""
        return ["nsenter", f"--net={self.net_file}", f"--mount={self.mnt_file}", "--", *argv]

    def run(self, argv: Sequence[str], what: str) -> str:
        """Run ``argv`` inside the namespaces and return its output; raise on failure."""
        return _run(self.command(argv), what)

    def create(self) -> HostLink:
        """Make both namespaces and the veth link; returns the link's addresses."""
        if self.exists():
            raise ControlPlaneError(f"node namespaces already exist in {self.ns_dir}")
        for hidden in _HIDDEN:
            if self.directory == hidden or hidden in self.directory.parents:
                raise ControlPlaneError(
                    f"the node's directory {self.directory} is under {hidden}, which the "
                    "node's mount namespace replaces with its own; choose another --dir"
                )
        link = self.link()
        self.ns_dir.mkdir(parents=True, exist_ok=True)
        # A mount namespace file may only be pinned on a mount that does not propagate.
        _run(["mount", "--bind", str(self.ns_dir), str(self.ns_dir)], "pinning the ns directory")
        _run(["mount", "--make-private", str(self.ns_dir)], "making the ns directory private")
        self.net_file.touch()
        self.mnt_file.touch()
        setup = " && ".join(
            (
                # Mounts made inside stay inside; kubelet wants shared propagation there.
                "mount --make-rshared /",
                "mount -t tmpfs -o mode=0755,size=256m regsandbox-node-run /run",
                "mount -t tmpfs -o mode=0755,size=512m regsandbox-node-log /var/log",
                # kubelet and the CNI plugins keep a few fixed paths there
                # (/var/lib/kubelet/device-plugins, /var/lib/cni/results).
                "mount -t tmpfs -o mode=0755,size=64m regsandbox-node-lib /var/lib",
            )
        )
        _run(
            [
                "unshare",
                f"--net={self.net_file}",
                f"--mount={self.mnt_file}",
                "--propagation=slave",
                "--",
                "sh",
                "-c",
                setup,
            ],
            "creating the node namespaces",
        )
        iface = link.host_interface
        if _link_exists(iface):
            _run(["ip", "link", "del", iface], "removing a stale link")
        _run(
            [
                "ip",
                "link",
                "add",
                iface,
                "type",
                "veth",
                "peer",
                "name",
                NODE_INTERFACE,
                "netns",
                str(self.net_file),
            ],
            "creating the node link",
        )
        _run(["ip", "addr", "add", f"{link.host_ip}/30", "dev", iface], "addressing the link")
        _run(["ip", "link", "set", iface, "up"], "raising the host end")
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{link.node_ip}/30", "dev", NODE_INTERFACE],
            ["ip", "link", "set", NODE_INTERFACE, "up"],
            ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
            ["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"],
        ):
            self.run(argv, "configuring the node namespace")
        return link

    def inode(self, which: str) -> int | None:
        """The namespace inode pinned at ``net`` or ``mnt``, or None when not pinned."""
        path = self.net_file if which == "net" else self.mnt_file
        if path not in set(mounts_under(self.ns_dir)):
            return None
        return path.stat().st_ino

    def destroy(self) -> None:
        """Unpin both namespaces and remove the host link; safe to repeat.

        The namespaces themselves end when the last process in them has exited, so
        stop the node's processes first.
        """
        iface = self.link_name()
        if _link_exists(iface):
            subprocess.run(["ip", "link", "del", iface], capture_output=True, check=False)
        for point in mounts_under(self.ns_dir):
            result = subprocess.run(["umount", str(point)], capture_output=True, check=False)
            if result.returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _host_networks(exclude: str) -> list[str]:
    """IPv4 networks routed on the host, except those of interface ``exclude``."""
    result = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False
    )
    nets: list[str] = []
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] != exclude and fields[2] == "inet":
            nets.append(str(ipaddress.ip_interface(fields[3]).network))
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=False)
    for line in routes.stdout.splitlines():
        dest = line.split()[0] if line.split() else ""
        if dest and dest != "default" and f"dev {exclude}" not in line:
            try:
                nets.append(str(ipaddress.ip_network(dest, strict=False)))
            except ValueError:
                continue
    return nets
