"""What the node runs with, checked without starting it (no root, no servers)."""

from __future__ import annotations

import ipaddress
import json
import tomllib
from pathlib import Path

import yaml

from sandbox.devenv.controlplane import SERVICE_CIDR
from sandbox.devenv.netns import HostLink
from sandbox.devenv.nodeconfig import (
    DNS_SERVICE_IP,
    POD_CIDR,
    NodeLayout,
    cni_config,
    containerd_config,
    coredns_objects,
    kubelet_config,
)
from sandbox.provision.sandbox_plan import IsolationSettings

LAYOUT = NodeLayout(Path("/srv/dev/node"))


def test_coredns_pods_are_the_ones_the_sandbox_dns_rule_allows() -> None:
    """The sandboxes' allow-dns policy selects pods by namespace and labels; CoreDNS must
    carry exactly those, or every sandbox pod loses DNS."""
    settings = IsolationSettings()
    objects = coredns_objects("localhost/coredns:1.14.7")
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == settings.dns_namespace
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert dict(settings.dns_pod_labels).items() <= labels.items()
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    # The policy allows port 53 at the pod: CoreDNS must listen there, not behind a remap.
    assert {(p["containerPort"], p["protocol"]) for p in ports} == {(53, "UDP"), (53, "TCP")}
    pod_spec = deployment["spec"]["template"]["spec"]
    assert pod_spec["securityContext"]["runAsNonRoot"] is True
    assert all("hostPath" not in v for v in pod_spec["volumes"])
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"]["clusterIP"] == DNS_SERVICE_IP
    assert ipaddress.ip_address(DNS_SERVICE_IP) in ipaddress.ip_network(SERVICE_CIDR)


def test_kubelet_runs_cgroupfs_accepts_cgroup_v1_explicitly_and_authorizes_by_webhook() -> None:
    config = yaml.safe_load(kubelet_config(LAYOUT, "10.250.0.2", "/regsandbox-x", Path("/ca")))
    assert config["failCgroupV1"] is False
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["cgroupRoot"] == "/regsandbox-x"
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert config["clusterDNS"] == [DNS_SERVICE_IP]
    assert config["address"] == "10.250.0.2"


def test_containerd_keeps_pod_namespaces_and_state_under_the_node_directory() -> None:
    config = tomllib.loads(containerd_config(LAYOUT, "localhost/pause:3.10", "/usr/sbin/runc"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == "localhost/pause:3.10"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    for path in (config["root"], config["state"], config["grpc"]["address"]):
        assert Path(path).is_relative_to(LAYOUT.root)


def test_pods_are_masqueraded_on_their_own_range() -> None:
    conf = json.loads(cni_config(LAYOUT))
    bridge = conf["plugins"][0]
    assert bridge["ipMasq"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": POD_CIDR}]]
    assert Path(bridge["ipam"]["dataDir"]).is_relative_to(LAYOUT.root)


def test_each_directory_gets_its_own_link_and_a_free_network(tmp_path: Path) -> None:
    one = HostLink.for_directory(tmp_path / "a")
    two = HostLink.for_directory(tmp_path / "b")
    assert one.host_interface != two.host_interface
    assert len(one.host_interface) <= 15  # the kernel's limit for interface names
    assert HostLink.for_directory(tmp_path / "a") == one
    net = ipaddress.ip_network(one.network)
    assert net.prefixlen == 30
    assert net.is_private
    assert {one.host_ip, one.node_ip} == {str(h) for h in net.hosts()}
    moved = HostLink.for_directory(tmp_path / "a", taken=[one.network])
    assert moved.network != one.network
    assert moved.host_interface == one.host_interface
