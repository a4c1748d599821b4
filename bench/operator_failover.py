"""Measure operator failover: kill -9 the leader while Sandboxes are being created.

    .venv/bin/python bench/operator_failover.py [--sandboxes 50] [--runs 3] [--lease-seconds 15]

Two operator replicas elect a leader on a Lease (``operators/leader.py``) on a fresh local
control plane, each a separate process under the chart's RBAC with a shared local audit
log. Each run applies ``--sandboxes`` Sandboxes, kills the leader with SIGKILL once
three are Ready, and times, from the kill:

- the standby holding the Lease (the election);
- the first Sandbox the standby makes Ready (it is acting);
- every Sandbox Ready.

A new replica takes the killed one's place before the next run, as the Deployment would
restart it. The renew deadline is two thirds of the lease and the retry interval 2 s
(1 s under a 10 s lease), as the chart sets them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.operator_process import (
    OperatorProcess,
    install_operator_rbac,
    service_account_kubeconfig,
)
from sandbox.devenv.toolchain import tool_path
from sandbox.kube.apply import apply, get, list_objects
from sandbox.provision.rbac import LEADER_ELECTION_LEASE
from sandbox.storage.admission import apply_claim_policies
from sandbox.testing import api_client, install_crds, sandbox_manifest

REPO = Path(__file__).resolve().parents[1]
NS = "regsandbox-system"
TENANT = "failover"


def _ready(obj: dict[str, Any] | None) -> bool:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _holder(api: client.ApiClient) -> str | None:
    lease = client.CoordinationV1Api(api).read_namespaced_lease(LEADER_ELECTION_LEASE, NS)
    return lease.spec.holder_identity if lease.spec else None


def _wait(check: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll every 50 ms; the monotonic time at which ``check`` first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


class _Replicas:
    """Start electing operator replicas with one configuration."""

    def __init__(self, kubeconfig: Path, tmp: Path, lease_seconds: int) -> None:
        self.kubeconfig, self.tmp, self.count = kubeconfig, tmp, 0
        retry = 2 if lease_seconds >= 10 else 1
        self.env = {
            "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
            "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
            "REGSANDBOX_NAMESPACE": NS,
            "REGSANDBOX_AUDIT_LOG_DIR": str(tmp / "audit"),
            "REGSANDBOX_AUDIT_SIGNING_KEY": str(tmp / "audit.key"),
            "REGSANDBOX_METRICS_PORT": "0",
            "REGSANDBOX_LOG_LEVEL": "INFO",
            "REGSANDBOX_OPA_CHECK_BINARY": str(tool_path("opa")),
            "REGSANDBOX_LEADER_ELECTION": "true",
            "REGSANDBOX_LEADER_ELECTION_LEASE_SECONDS": str(lease_seconds),
            "REGSANDBOX_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": str(lease_seconds * 2 // 3),
            "REGSANDBOX_LEADER_ELECTION_RETRY_SECONDS": str(retry),
        }

    def start(self) -> OperatorProcess:
        self.count += 1
        name = f"replica-{self.count}"
        env = {**self.env, "REGSANDBOX_LEADER_ELECTION_IDENTITY": name}
        return OperatorProcess(self.kubeconfig, env, self.tmp / f"{name}.log").start()


def main() -> None:
    """Run the failovers and print Markdown rows."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sandboxes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lease-seconds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        plane = ControlPlane(tmp / "cp")
        plane.up()
        procs: list[OperatorProcess] = []
        try:
            admin = api_client(plane.admin_kubeconfig)
            install_crds(admin, REPO / "charts/regsandbox/crds")
            install_operator_rbac(admin, NS)
            apply_claim_policies(admin)
            kubeconfig = service_account_kubeconfig(admin, NS, tmp / "sa.kubeconfig")
            signer = generate_key_file(tmp / "audit.key", "bench.regsandbox/audit")
            AuditLog.create(tmp / "audit", "bench.regsandbox/audit", signer).close()
            replicas = _Replicas(kubeconfig, tmp, args.lease_seconds)
            leader = replicas.start()
            procs.append(leader)
            _wait(lambda: _holder_or_none(admin) == "replica-1", 120, "a leader")
            standby = replicas.start()
            procs.append(standby)
            apply(
                admin,
                {
                    "apiVersion": "regsandbox.io/v1alpha1",
                    "kind": "Tenant",
                    "metadata": {"name": TENANT},
                    "spec": {
                        "organisation": "Failover Bank",
                        "sector": "finance",
                        "jurisdiction": "LU",
                        "members": [],
                        "attestations": {"supervisoryAuthority": "CSSF"},
                    },
                },
            )
            home = f"tenant-{TENANT}"
            _wait(lambda: get(admin, "Namespace", home), 120, "the tenant namespace")
            rows: list[tuple[float, float, float, int]] = []
            for run in range(args.runs):
                names = [f"r{run}-{i:03d}" for i in range(args.sandboxes)]
                for name in names:
                    body = sandbox_manifest(
                        name, TENANT, resources={"cpu": "1", "memory": "1Gi", "storage": "1Gi"}
                    )
                    apply(admin, body)

                def ready(names: list[str] = names) -> set[str]:
                    return {
                        o["metadata"]["name"]
                        for o in list_objects(admin, "Sandbox", home)
                        if o["metadata"]["name"] in names and _ready(o)
                    }

                _wait(lambda: len(ready()) >= 3, 300, "three Ready")
                leader.kill()
                killed = time.monotonic()
                before = ready()
                new_holder = standby.env["REGSANDBOX_LEADER_ELECTION_IDENTITY"]
                elected = _wait(lambda h=new_holder: _holder_or_none(admin) == h, 300, "election")
                acting = _wait(lambda b=before: len(ready() - b) > 0, 300, "a new Ready")
                done = _wait(lambda n=args.sandboxes: len(ready()) == n, 600, "all Ready")
                rows.append((elected - killed, acting - killed, done - killed, len(before)))
                print(
                    f"| run {run + 1}: {len(before)}/{len(names)} Ready at the kill | "
                    f"elected {elected - killed:.1f} s, acting {acting - killed:.1f} s, "
                    f"all Ready {done - killed:.1f} s |",
                    flush=True,
                )
                # The killed pod restarts and becomes the standby.
                leader, standby = standby, replicas.start()
                procs.append(standby)
            for label, column in (("elected", 0), ("acting", 1), ("all Ready", 2)):
                values = [r[column] for r in rows]
                print(
                    f"| {label} after kill -9, lease {args.lease_seconds} s "
                    f"({args.runs} runs, {args.sandboxes} Sandboxes) | "
                    f"median {statistics.median(values):.1f} s, max {max(values):.1f} s |"
                )
        finally:
            for proc in procs:
                proc.stop()
            plane.down()


def _holder_or_none(api: client.ApiClient) -> str | None:
    try:
        return _holder(api)
    except client.ApiException:
        return None


if __name__ == "__main__":
    main()
