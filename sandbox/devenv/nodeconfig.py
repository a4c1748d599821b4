"""Configuration files and API objects of the local node, rendered from its layout.

Pure functions: they take paths and addresses and return text or manifests, so what
the node runs with can be read (and tested) without starting it. Used by
:mod:`sandbox.devenv.dataplane`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CLUSTER_CIDR",
    "CLUSTER_DOMAIN",
    "CNI_BIN_DIR",
    "DNS_SERVICE_IP",
    "NODE_NAME",
    "POD_CIDR",
    "NodeLayout",
    "cni_config",
    "containerd_config",
    "coredns_objects",
    "kube_proxy_config",
    "kube_router_rbac",
    "kubelet_config",
    "node_rbac",
]

NODE_NAME = "regsandbox-node"
"""The node's name (its kubelet authenticates as ``system:node:regsandbox-node``)."""

CLUSTER_CIDR = "10.244.0.0/16"
POD_CIDR = "10.244.0.0/24"
"""Pod addresses; they exist only inside the node's network namespace."""

DNS_SERVICE_IP = "10.96.0.10"
"""The cluster DNS Service address handed to every pod (``clusterDNS``)."""

CLUSTER_DOMAIN = "cluster.local"

CNI_BIN_DIR = Path("/usr/lib/cni")
"""Where Debian's containernetworking-plugins installs bridge, host-local, loopback, portmap."""

KUBE_ROUTER_USER = "system:kube-router"
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"
"""The identity kube-apiserver presents to the kubelet (logs, exec, port-forward)."""


@dataclass(frozen=True)
class NodeLayout:
    """Where the node keeps everything, all under one directory."""

    root: Path

    @property
    def etc(self) -> Path:
        """Rendered configuration files."""
        return self.root / "etc"

    @property
    def pki(self) -> Path:
        """The node's certificates and kubeconfigs."""
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        """One log per node process."""
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """Sockets."""
        return self.root / "run"

    @property
    def containerd_socket(self) -> Path:
        """containerd's gRPC socket (images are imported through it)."""
        return self.run / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        """containerd's persistent state (content store, snapshots)."""
        return self.root / "containerd" / "root"

    @property
    def containerd_state(self) -> Path:
        """containerd's runtime state (pod network namespace files live here)."""
        return self.root / "containerd" / "state"

    @property
    def cni_conf_dir(self) -> Path:
        """The CNI network configuration containerd reads."""
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        """host-local's address leases."""
        return self.root / "cni" / "ipam"

    @property
    def kubelet_root(self) -> Path:
        """kubelet's ``--root-dir`` (pod volumes)."""
        return self.root / "kubelet"

    def kubeconfig(self, component: str) -> Path:
        """The kubeconfig of a node component."""
        return self.pki / f"{component}.kubeconfig"


def containerd_config(layout: NodeLayout, sandbox_image: str, runc: str) -> str:
    """containerd 1.6 (config version 2): CRI with runc, cgroupfs, our CNI, no registry."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        (
            "version = 2",
            f'root = "{layout.containerd_root}"',
            f'state = "{layout.containerd_state}"',
            # Plugins that would probe devices or filesystems the node does not use.
            'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs",'
            ' "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",'
            ' "io.containerd.snapshotter.v1.aufs"]',
            "[grpc]",
            f'  address = "{layout.containerd_socket}"',
            "[ttrpc]",
            f'  address = "{layout.containerd_socket}.ttrpc"',
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{layout.root / "containerd" / "opt"}"',
            f"[{cri}]",
            f'  sandbox_image = "{sandbox_image}"',
            "  disable_apparmor = true",
            "  restrict_oom_score_adj = true",
            # Pod network namespaces are pinned under the state dir, not in /run/netns.
            "  netns_mounts_under_state_dir = true",
            f"  [{cri}.containerd]",
            '    snapshotter = "overlayfs"',
            '    default_runtime_name = "runc"',
            f"    [{cri}.containerd.runtimes.runc]",
            '      runtime_type = "io.containerd.runc.v2"',
            f"      [{cri}.containerd.runtimes.runc.options]",
            "        SystemdCgroup = false",
            f'        BinaryName = "{runc}"',
            f"  [{cri}.cni]",
            f'    bin_dir = "{CNI_BIN_DIR}"',
            f'    conf_dir = "{layout.cni_conf_dir}"',
            "",
        )
    )


def cni_config(layout: NodeLayout) -> str:
    """A bridge network for the pods with host-local addresses and masquerading.

    Pods leave the node masqueraded to the node's address, so the host end of the link
    needs no route back to the pod range.
    """
    conf = {
        "cniVersion": "0.4.0",
        "name": "regsandbox",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(layout.cni_ipam_dir),
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


def kubelet_config(
    layout: NodeLayout, node_ip: str, cgroup_root: str, client_ca: Path, max_pods: int = 110
) -> str:
    """KubeletConfiguration: cgroupfs, cgroup v1 accepted, webhook authn/authz, no host paths."""
    doc: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The default in 1.34, set explicitly: machines in cgroup v1 or hybrid mode run it,
        # and the default flips to true in 1.35.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        # Pods live under a cgroup of this node only, removed by `dev down`.
        "cgroupRoot": cgroup_root,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(layout.pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(layout.pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [DNS_SERVICE_IP],
        # No upstream resolver: names outside the cluster do not resolve in a pod.
        "resolvConf": "",
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "volumePluginDir": str(layout.kubelet_root / "volume-plugins"),
        "maxPods": max_pods,
        "serializeImagePulls": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusReportFrequency": "10s",
    }
    return str(yaml.safe_dump(doc, sort_keys=False))


def kube_proxy_config(layout: NodeLayout) -> str:
    """KubeProxyConfiguration: iptables mode, metrics and health on the node's loopback."""
    doc = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": CLUSTER_CIDR,
        "conntrack": {"maxPerCore": 0},
        "metricsBindAddress": "127.0.0.1:10249",
        "healthzBindAddress": "127.0.0.1:10256",
    }
    return str(yaml.safe_dump(doc, sort_keys=False))


def _cluster_role(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }


def _binding(name: str, role: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [subject],
    }


def kube_router_rbac() -> list[dict[str, Any]]:
    """What kube-router's NetworkPolicy controller reads, and nothing more."""
    read = ["get", "list", "watch"]
    return [
        _cluster_role(
            "regsandbox:kube-router",
            [
                {
                    "apiGroups": [""],
                    "resources": ["namespaces", "pods", "services", "endpoints", "nodes"],
                    "verbs": read,
                },
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": read,
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            ],
        ),
        _binding(
            "regsandbox:kube-router",
            "regsandbox:kube-router",
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBE_ROUTER_USER},
        ),
    ]


def node_rbac() -> list[dict[str, Any]]:
    """The API server may use the kubelet API (logs, exec); kube-router reads policies."""
    return [
        _binding(
            "regsandbox:apiserver-kubelet-client",
            "system:kubelet-api-admin",
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "User",
                "name": APISERVER_KUBELET_CLIENT,
            },
        ),
        *kube_router_rbac(),
    ]


_COREFILE = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""
"""Cluster names only: nothing is forwarded, so a pod cannot use DNS to leave the node."""


def coredns_objects(image: str) -> list[dict[str, Any]]:
    """CoreDNS as the ``kube-dns`` pods of ``kube-system`` behind the clusterDNS Service.

    ``image`` is the locally built ``coredns`` image (the pinned static binary).

    The pods carry ``k8s-app: kube-dns``, the label the sandboxes' DNS egress policy
    selects, and serve on port 53 as a non-root user through the namespaced
    ``net.ipv4.ip_unprivileged_port_start`` sysctl (no capability needed).
    """
    ns = "kube-system"
    labels = {"k8s-app": "kube-dns"}
    read = ["list", "watch"]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": ns},
        },
        _cluster_role(
            "regsandbox:coredns",
            [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": read,
                },
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
            ],
        ),
        _binding(
            "regsandbox:coredns",
            "regsandbox:coredns",
            {"kind": "ServiceAccount", "name": "coredns", "namespace": ns},
        ),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": ns},
            "data": {"Corefile": _COREFILE},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "securityContext": {
                            "runAsNonRoot": True,
                            "runAsUser": 65534,
                            "runAsGroup": 65534,
                            "seccompProfile": {"type": "RuntimeDefault"},
                            "sysctls": [
                                {"name": "net.ipv4.ip_unprivileged_port_start", "value": "53"}
                            ],
                        },
                        "containers": [
                            {
                                "name": "coredns",
                                "image": image,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 2,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                },
                                "securityContext": {
                                    "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]},
                                },
                                "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns"}],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": 53, "protocol": "TCP"},
                ],
            },
        },
    ]
