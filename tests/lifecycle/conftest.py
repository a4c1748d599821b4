"""A real operator process, under the chart's RBAC, against the session control plane."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from audit.log import AuditLog, LogReader
from audit.note import Signer
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.operator_process import (
    OperatorProcess,
    install_operator_rbac,
    service_account_kubeconfig,
)
from sandbox.devenv.processes import free_port
from sandbox.devenv.toolchain import tool_path
from sandbox.kube.apply import apply, delete
from sandbox.storage.admission import apply_claim_policies
from sandbox.testing import install_crds

from .helpers import SYSTEM_NS, unique

ORIGIN = "audit.regsandbox.test/operator"


@pytest.fixture(scope="session")
def crds(admin_api: client.ApiClient, repo_root: Path) -> None:
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")
    apply_claim_policies(admin_api)  # the operator's own claims must pass it


@pytest.fixture(scope="session")
def operator_kubeconfig(
    admin_api: client.ApiClient, control_plane: ControlPlane, crds: None
) -> Path:
    install_operator_rbac(admin_api, SYSTEM_NS)
    return service_account_kubeconfig(
        admin_api, SYSTEM_NS, control_plane.directory / "users" / "operator-sa.kubeconfig"
    )


@pytest.fixture(scope="session")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("audit")
    key = base / "signing.key"
    signer: Signer = generate_key_file(key, ORIGIN)
    AuditLog.create(base / "log", ORIGIN, signer).close()
    return base / "log", key


def operator_env(audit: tuple[Path, Path], **extra: str) -> dict[str, str]:
    log, key = audit
    return {
        "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
        "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
        "REGSANDBOX_NAMESPACE": SYSTEM_NS,
        "REGSANDBOX_AUDIT_LOG_DIR": str(log),
        "REGSANDBOX_AUDIT_SIGNING_KEY": str(key),
        "REGSANDBOX_RESYNC_SECONDS": "1",
        "REGSANDBOX_METRICS_PORT": "0",
        "REGSANDBOX_LOG_LEVEL": "INFO",
        # As the image does: every policy set is compiled by OPA before regopy takes it.
        "REGSANDBOX_OPA_CHECK_BINARY": str(tool_path("opa")),
        **extra,
    }


METRICS_PORT = free_port()
"""Where the session's operator serves Prometheus metrics (127.0.0.1)."""


@pytest.fixture(scope="session")
def operator(
    operator_kubeconfig: Path,
    audit_dir: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The operator, running for the whole session (tests that kill it restart it)."""
    log = tmp_path_factory.mktemp("operator-logs") / "operator.log"
    env = operator_env(audit_dir, REGSANDBOX_METRICS_PORT=str(METRICS_PORT))
    proc = OperatorProcess(operator_kubeconfig, env, log).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def audit_actions(audit_dir: tuple[Path, Path]) -> Callable[[], list[dict[str, Any]]]:
    """Read the audit log's entries as of its latest checkpoint."""

    def read() -> list[dict[str, Any]]:
        reader = LogReader(audit_dir[0])
        try:
            return [reader.entry(i).model_dump(mode="json") for i in range(reader.size)]
        finally:
            reader.close()

    return read


@pytest.fixture
def tenant_factory(admin_api: client.ApiClient) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(
        sector: str = "finance",
        jurisdiction: str = "LU",
        members: list[dict[str, str]] | None = None,
        **spec: Any,
    ) -> str:
        name = unique("t")
        attestations = {"supervisoryAuthority": "CSSF"} if sector == "finance" else {}
        body = {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {
                "organisation": f"Org {name}",
                "sector": sector,
                "jurisdiction": jurisdiction,
                "members": members or [],
                "attestations": attestations,
                **spec,
            },
        }
        apply(admin_api, body)
        made.append(name)
        return name

    yield make
    for name in made:
        delete(admin_api, "Tenant", name)


@pytest.fixture
def swap_operator(
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    audit_dir: tuple[Path, Path],
    tmp_path: Path,
) -> Iterator[Callable[..., OperatorProcess]]:
    """Replace the session's operator by one with other settings for one test.

    Two operators must never act on the same objects, so the session's one is stopped
    first and restarted afterwards.
    """
    started: list[OperatorProcess] = []

    def swap(**env: str) -> OperatorProcess:
        operator.stop()
        proc = OperatorProcess(
            operator_kubeconfig,
            operator_env(audit_dir, **env),
            tmp_path / f"operator-{len(started)}.log",
        ).start()
        started.append(proc)
        return proc

    yield swap
    for proc in started:
        proc.stop()
    if not operator.alive():
        operator.start()
