"""The export airlock against a real control plane, real users, a real MinIO.

The real operator runs as a process under the chart's operator ServiceAccount, with an
export outbox on MinIO, for the tests of this package only (package scope), so it never
runs beside the session's other operator.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from audit.log import AuditLog, LogReader
from audit.signing import generate_key_file
from sandbox.artifacts.admission import apply_admission_policies
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.minio import MinioServer, running_minio
from sandbox.devenv.operator_process import (
    OperatorProcess,
    install_operator_rbac,
    service_account_kubeconfig,
)
from sandbox.kube.apply import apply, delete, get
from sandbox.storage.admission import apply_claim_policies
from sandbox.testing import install_crds

SYSTEM_NS = "regsandbox-system"
ORIGIN = "audit.regsandbox.test/exports"
OUTBOX = "regsandbox-outbox"
DEST_EU = "released-eu"
DEST_US = "released-us"
HERE = Path(__file__).resolve().parent

# What sandbox/api/resources.py should register (the lead wires it).


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def wait_until(check: Callable[[], Any], timeout: float, what: str, op: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    tail = op.tail() if op is not None else ""
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}\n{tail}")


ExportOperator = OperatorProcess
"""The real operator (``sandbox-operator run``), here with an export outbox."""


@pytest.fixture(scope="session")
def export_crds(admin_api: client.ApiClient, repo_root: Path) -> None:
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")
    apply_admission_policies(admin_api)
    apply_claim_policies(admin_api)


def get_crd(ext: client.ApiextensionsV1Api, name: str) -> Any:
    from kubernetes.client.rest import ApiException

    try:
        return ext.read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = get_crd(ext, name)
    conds = (crd.status.conditions or []) if crd and crd.status else []
    return any(c.type == "Established" and c.status == "True" for c in conds)


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    with running_minio(tmp_path_factory.mktemp("minio")) as server:
        s3 = server.client()
        for bucket in (OUTBOX, DEST_EU, DEST_US):
            s3.create_bucket(Bucket=bucket)
        yield server


@pytest.fixture(scope="session")
def outbox_settings(minio: MinioServer) -> dict[str, Any]:
    return {
        "bucket": OUTBOX,
        "endpoint": minio.endpoint,
        "access_key_id": minio.access_key,
        "secret_access_key": minio.secret_key,
        "destinations": {
            DEST_EU: {"region": "aws:eu-central-1"},
            DEST_US: {"region": "aws:us-east-1"},
        },
    }


@pytest.fixture(scope="session")
def export_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("export-audit")
    key = base / "signing.key"
    signer = generate_key_file(key, ORIGIN)
    AuditLog.create(base / "log", ORIGIN, signer).close()
    (base / "vkey").write_text(signer.verifier.vkey + "\n")
    return base / "log", key


@pytest.fixture(scope="package")
def export_operator(
    admin_api: client.ApiClient,
    control_plane: ControlPlane,
    export_crds: None,
    export_audit: tuple[Path, Path],
    outbox_settings: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ExportOperator]:
    install_operator_rbac(admin_api, SYSTEM_NS)
    kubeconfig = service_account_kubeconfig(
        admin_api, SYSTEM_NS, control_plane.directory / "users" / "export-operator.kubeconfig"
    )
    log, key = export_audit
    env = {
        "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
        "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
        "REGSANDBOX_NAMESPACE": SYSTEM_NS,
        "REGSANDBOX_AUDIT_LOG_DIR": str(log),
        "REGSANDBOX_AUDIT_SIGNING_KEY": str(key),
        "REGSANDBOX_METRICS_PORT": "0",
        "REGSANDBOX_EXPORT_OUTBOX": json.dumps(outbox_settings),
        "REGSANDBOX_EXPORT_RESYNC_SECONDS": "0.5",
    }
    out = tmp_path_factory.mktemp("export-operator") / "operator.log"
    proc = ExportOperator(kubeconfig, env, out).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def audit_entries(export_audit: tuple[Path, Path]) -> Callable[[], list[dict[str, Any]]]:
    """The export operator's audit entries as of its latest checkpoint."""

    def read() -> list[dict[str, Any]]:
        with LogReader(export_audit[0]) as reader:
            return [reader.entry(i).model_dump(mode="json") for i in range(reader.size)]

    return read


@pytest.fixture
def tenant(admin_api: client.ApiClient) -> Iterator[Callable[..., str]]:
    """Make a tenant (handled by the export operator) with the given members."""
    made: list[str] = []

    def make(sector: str, members: list[dict[str, str]]) -> str:
        name = unique("x")
        apply(
            admin_api,
            {
                "apiVersion": "regsandbox.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": name, "labels": {"regsandbox.io/test-operator": "exports"}},
                "spec": {
                    "organisation": f"Org {name}",
                    "sector": sector,
                    "jurisdiction": "LU",
                    "members": members,
                    "attestations": {"supervisoryAuthority": "CSSF"} if sector == "finance" else {},
                },
            },
        )
        made.append(name)
        return name

    yield make
    for name in made:
        delete(admin_api, "Tenant", name)


def home_ready(admin_api: client.ApiClient, tenant: str, op: ExportOperator) -> str:
    """Wait for the tenant's home namespace and member RoleBindings."""
    ns = f"tenant-{tenant}"

    def ready() -> bool:
        obj = get(admin_api, "Tenant", tenant) or {}
        conds = (obj.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    wait_until(ready, 30, f"tenant {tenant} home", op)
    return ns
