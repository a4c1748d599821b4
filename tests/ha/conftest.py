"""Two operator replicas with leader election, against the session control plane.

The replicas run as real processes under the chart's RBAC (the Lease rights included)
and share one local audit log, as two pods share the audit service. Every other
operator this test session started is stopped first — two operators that do not elect
must never act on the same objects — and started again afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from audit.log import AuditLog, LogReader
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.operator_process import (
    OperatorProcess,
    install_operator_rbac,
    service_account_kubeconfig,
)
from sandbox.devenv.toolchain import tool_path
from sandbox.kube.apply import apply, delete
from sandbox.provision.rbac import LEADER_ELECTION_LEASE
from sandbox.storage.admission import apply_claim_policies
from sandbox.testing import install_crds

SYSTEM_NS = "regsandbox-system"
ORIGIN = "audit.regsandbox.test/ha"


def lease_holder(api: client.ApiClient) -> str | None:
    """The current holder of the operators' Lease, or None."""
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(
            LEADER_ELECTION_LEASE, SYSTEM_NS
        )
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return (lease.spec.holder_identity or None) if lease.spec else None


def drop_lease(api: client.ApiClient) -> None:
    """Delete the operators' Lease, if any (each test starts an election afresh)."""
    try:
        client.CoordinationV1Api(api).delete_namespaced_lease(LEADER_ELECTION_LEASE, SYSTEM_NS)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="module")
def cluster_to_ourselves() -> Iterator[None]:
    """Stop the operators other tests started (restarted afterwards)."""
    stopped = OperatorProcess.running()
    for proc in stopped:
        proc.stop()
    yield
    for proc in stopped:
        proc.start()


@pytest.fixture(scope="module")
def ha_kubeconfig(
    admin_api: client.ApiClient, control_plane: ControlPlane, repo_root: Path
) -> Path:
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")
    apply_claim_policies(admin_api)
    install_operator_rbac(admin_api, SYSTEM_NS)
    return service_account_kubeconfig(
        admin_api, SYSTEM_NS, control_plane.directory / "users" / "operator-ha.kubeconfig"
    )


@pytest.fixture
def audit_log(tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "signing.key"
    AuditLog.create(tmp_path / "log", ORIGIN, generate_key_file(key, ORIGIN)).close()
    return tmp_path / "log", key


@pytest.fixture
def audit_entries(audit_log: tuple[Path, Path]) -> Callable[[], list[dict[str, Any]]]:
    """The shared audit log's entries as of its latest checkpoint."""

    def read() -> list[dict[str, Any]]:
        reader = LogReader(audit_log[0])
        try:
            return [reader.entry(i).model_dump(mode="json") for i in range(reader.size)]
        finally:
            reader.close()

    return read


@pytest.fixture
def replicas(
    admin_api: client.ApiClient,
    cluster_to_ourselves: None,
    ha_kubeconfig: Path,
    audit_log: tuple[Path, Path],
    tmp_path: Path,
) -> Iterator[Callable[..., OperatorProcess]]:
    """Factory: ``replicas("a", lease_seconds=5)`` starts one electing operator replica."""
    drop_lease(admin_api)
    started: list[OperatorProcess] = []

    def start(identity: str, lease_seconds: int = 5) -> OperatorProcess:
        log, key = audit_log
        env = {
            "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
            "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
            "REGSANDBOX_NAMESPACE": SYSTEM_NS,
            "REGSANDBOX_AUDIT_LOG_DIR": str(log),
            "REGSANDBOX_AUDIT_SIGNING_KEY": str(key),
            "REGSANDBOX_RESYNC_SECONDS": "30",
            "REGSANDBOX_METRICS_PORT": "0",
            "REGSANDBOX_OPA_CHECK_BINARY": str(tool_path("opa")),
            "REGSANDBOX_LEADER_ELECTION": "true",
            "REGSANDBOX_LEADER_ELECTION_IDENTITY": identity,
            "REGSANDBOX_LEADER_ELECTION_LEASE_SECONDS": str(lease_seconds),
            "REGSANDBOX_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": str(lease_seconds * 2 / 3),
            "REGSANDBOX_LEADER_ELECTION_RETRY_SECONDS": "1",
        }
        proc = OperatorProcess(ha_kubeconfig, env, tmp_path / f"operator-{identity}.log")
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()
    drop_lease(admin_api)


@pytest.fixture
def tenant(admin_api: client.ApiClient) -> Iterator[str]:
    """A finance tenant, deleted afterwards (with its sandboxes)."""
    name = f"ha-{uuid.uuid4().hex[:5]}"
    apply(
        admin_api,
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
    yield name
    delete(admin_api, "Tenant", name)
