"""Benchmark the local data plane: warm start, and Sandbox apply -> first pod Running.

    .venv/bin/python bench/dataplane.py [--starts 3] [--sandboxes 20]

Needs root and the node's tools (``make deps tools``). "Warm" means the tools and the
pod images are already built and cached; every start is a fresh control plane and node
(empty etcd, empty containerd) up to a Ready node with CoreDNS serving. Then the real
operator runs against one data plane and, one after the other, ``--sandboxes`` Sandboxes
are applied; for each, the time from the apply to a workload pod in the new sandbox
namespace being Running is measured (provisioning by the operator, admission, scheduling,
the pod sandbox and container start, the NetworkPolicies already in place).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kubernetes import client

from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.dataplane import unavailable_reason
from sandbox.devenv.images import image_ref
from sandbox.devenv.operator_process import (
    OperatorProcess,
    install_operator_rbac,
    service_account_kubeconfig,
)
from sandbox.devenv.toolchain import find_tools_dir, tool_path
from sandbox.kube.apply import apply, get
from sandbox.provision.names import sandbox_namespace
from sandbox.storage.admission import apply_claim_policies
from sandbox.testing import api_client, install_crds, sandbox_manifest

SYSTEM_NS = "regsandbox-system"


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def warm_starts(base: Path, runs: int) -> list[float]:
    """Seconds from nothing to a Ready node with DNS, per run (down in between)."""
    timings: list[float] = []
    for run in range(runs):
        plane = ControlPlane(base / f"start-{run}", data_plane=True)
        started = time.monotonic()
        plane.up(timeout=300)
        timings.append(time.monotonic() - started)
        print(f"warm start {run + 1}: {timings[-1]:.1f} s", flush=True)
        plane.down()
    return timings


def _pod(namespace: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "workload", "namespace": namespace},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 0,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 65534,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": image_ref("busybox"),
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {"cpu": "100m", "memory": "32Mi"},
                    },
                }
            ],
        },
    }


def sandbox_to_pod(base: Path, count: int) -> list[float]:
    """Seconds from applying a Sandbox to its first workload pod Running, per sandbox."""
    plane = ControlPlane(base / "sandboxes", data_plane=True)
    plane.up(timeout=300)
    operator: OperatorProcess | None = None
    try:
        api = api_client(plane.admin_kubeconfig)
        install_crds(api, find_tools_dir().parent / "charts/regsandbox/crds")
        apply_claim_policies(api)
        install_operator_rbac(api, SYSTEM_NS)
        kubeconfig = service_account_kubeconfig(
            api, SYSTEM_NS, plane.directory / "users" / "operator.kubeconfig"
        )
        origin = "audit.regsandbox.bench/dataplane"
        key = base / "signing.key"
        AuditLog.create(base / "log", origin, generate_key_file(key, origin)).close()
        env = {
            "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
            "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
            "REGSANDBOX_NAMESPACE": SYSTEM_NS,
            "REGSANDBOX_AUDIT_LOG_DIR": str(base / "log"),
            "REGSANDBOX_AUDIT_SIGNING_KEY": str(key),
            "REGSANDBOX_METRICS_PORT": "0",
            "REGSANDBOX_OPA_CHECK_BINARY": str(tool_path("opa")),
        }
        operator = OperatorProcess(kubeconfig, env, base / "operator.log").start()
        tenant = f"bench-{uuid.uuid4().hex[:5]}"
        apply(
            api,
            {
                "apiVersion": "regsandbox.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": tenant},
                "spec": {
                    "organisation": "Bench",
                    "sector": "finance",
                    "jurisdiction": "LU",
                    "members": [],
                    "attestations": {"supervisoryAuthority": "CSSF"},
                },
            },
        )
        operator.wait_until(
            lambda: get(api, "Namespace", f"tenant-{tenant}"), 60, "tenant home namespace"
        )
        core = client.CoreV1Api(api)
        timings: list[float] = []
        for index in range(count):
            name = f"s{index:03d}"
            ns = sandbox_namespace(tenant, name)
            body = sandbox_manifest(
                name, tenant, resources={"cpu": "1", "memory": "1Gi", "storage": "1Gi"}
            )
            started = time.monotonic()
            apply(api, body)

            def ready(name: str = name) -> bool:
                obj = get(api, "Sandbox", name, f"tenant-{tenant}") or {}
                conditions = (obj.get("status") or {}).get("conditions") or []
                return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

            operator.wait_until(ready, 120, f"sandbox {name} Ready")
            core.create_namespaced_pod(ns, _pod(ns))

            def running(ns: str = ns) -> bool:
                return bool(core.read_namespaced_pod("workload", ns).status.phase == "Running")

            _wait(running, 120, f"pod in {ns} Running")
            timings.append(time.monotonic() - started)
            print(f"sandbox {index + 1}: {timings[-1]:.2f} s", flush=True)
        return timings
    finally:
        if operator is not None:
            operator.stop()
        plane.down()


def main() -> None:
    """Run the benchmark and print Markdown table rows."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--sandboxes", type=int, default=20)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot run the data plane here: {reason}")
    with tempfile.TemporaryDirectory(prefix="bench-dp-") as tmp:
        base = Path(tmp)
        starts = warm_starts(base, args.starts)
        pods = sandbox_to_pod(base, args.sandboxes)
    print(f"| machine | {os.cpu_count()} CPUs |")
    print(
        f"| warm data-plane start to Ready node + DNS ({args.starts} runs) | "
        f"median {statistics.median(starts):.1f} s, max {max(starts):.1f} s |"
    )
    print(
        f"| Sandbox apply -> first workload pod Running ({args.sandboxes} sandboxes) | "
        f"p50 {_quantile(pods, 0.5):.2f} s, p99 {_quantile(pods, 0.99):.2f} s, "
        f"max {max(pods):.2f} s |"
    )


if __name__ == "__main__":
    main()
