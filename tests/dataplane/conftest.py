"""A control plane WITH a node for the tests that need pods to run.

The rest of the suite keeps the cheaper control-plane-only ``control_plane`` fixture;
this one starts a second control plane with ``data_plane=True`` (containerd, kubelet,
kube-proxy, kube-router, CoreDNS, kube-scheduler in namespaces of their own) and a real
operator against it. Where the machine cannot run a node the tests are skipped with the
reason — and with ``CI=true`` they fail instead, because CI must run them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.minio import MinioServer, running_minio
from sandbox.devenv.operator_process import (
    OperatorProcess,
    install_operator_rbac,
    service_account_kubeconfig,
)
from sandbox.devenv.toolchain import tool_path
from sandbox.storage.admission import apply_claim_policies
from sandbox.testing import api_client, install_crds

from .pods import SYSTEM_NS, Kubectl
from .stacks import require_data_plane

ORIGIN = "audit.regsandbox.test/dataplane"


@pytest.fixture(scope="session")
def data_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane with one node; skipped (or, in CI, failed) where none can run.

    Set ``REGSANDBOX_TEST_DP_DIR`` to keep its logs (``DIR/logs``, ``DIR/node/logs``).
    """
    require_data_plane()
    directory = Path(os.environ.get("REGSANDBOX_TEST_DP_DIR") or tmp_path_factory.mktemp("dp"))
    plane = ControlPlane(directory, data_plane=True)
    try:
        plane.up(timeout=300.0)
    except BaseException:
        plane.down()
        raise
    try:
        yield plane
    finally:
        plane.down()


@pytest.fixture(scope="session")
def dp_api(data_plane: ControlPlane) -> client.ApiClient:
    """Cluster-admin ApiClient of the data-plane control plane."""
    return api_client(data_plane.admin_kubeconfig)


@pytest.fixture(scope="session")
def kubectl(data_plane: ControlPlane) -> Kubectl:
    """kubectl as the cluster administrator (exec into pods, logs)."""
    return Kubectl(tool_path("kubectl"), data_plane.admin_kubeconfig)


@pytest.fixture(scope="session")
def dp_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A fresh audit log and its signing key for the data plane's operator."""
    base = tmp_path_factory.mktemp("dp-audit")
    key = base / "signing.key"
    signer = generate_key_file(key, ORIGIN)
    AuditLog.create(base / "log", ORIGIN, signer).close()
    return base / "log", key


@pytest.fixture(scope="session")
def dp_operator(
    data_plane: ControlPlane,
    dp_api: client.ApiClient,
    dp_audit: tuple[Path, Path],
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """The real operator, under the chart's RBAC, provisioning on the data plane."""
    install_crds(dp_api, repo_root / "charts/regsandbox/crds")
    apply_claim_policies(dp_api)
    install_operator_rbac(dp_api, SYSTEM_NS)
    kubeconfig = service_account_kubeconfig(
        dp_api, SYSTEM_NS, data_plane.directory / "users" / "operator-sa.kubeconfig"
    )
    log, key = dp_audit
    env = {
        "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
        "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
        "REGSANDBOX_NAMESPACE": SYSTEM_NS,
        "REGSANDBOX_AUDIT_LOG_DIR": str(log),
        "REGSANDBOX_AUDIT_SIGNING_KEY": str(key),
        "REGSANDBOX_RESYNC_SECONDS": "1",
        "REGSANDBOX_METRICS_PORT": "0",
        "REGSANDBOX_LOG_LEVEL": "INFO",
        "REGSANDBOX_OPA_CHECK_BINARY": str(tool_path("opa")),
    }
    proc = OperatorProcess(
        kubeconfig, env, tmp_path_factory.mktemp("dp-operator") / "operator.log"
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def dp_storage(
    data_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MinioServer]:
    """A real MinIO where pods could route to it: on the host end of the node's link."""
    state = data_plane.load_state()
    assert state is not None
    with running_minio(tmp_path_factory.mktemp("dp-minio"), host=state.bind_address) as server:
        yield server


def host_iptables() -> str:
    """The host's iptables rules (the node must never add any)."""
    result = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False)
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith(("#", ":")))
