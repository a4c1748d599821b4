"""The whole of regsandbox on one machine: what ``make up`` runs and ``make demo`` tours.

Control plane, CRDs and RBAC, an S3-compatible server (MinIO) with sample datasets,
the audit service, the dataset gateway and the operator — each a real process on
loopback, each under the identity the chart would give it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client

from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.artifacts.admission import apply_admission_policies
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.minio import MinioServer, running_minio
from sandbox.devenv.operator_process import (
    OperatorProcess,
    install_operator_rbac,
    service_account_kubeconfig,
)
from sandbox.devenv.processes import free_port, log_tail
from sandbox.devenv.softhsm import init_softhsm
from sandbox.devenv.toolchain import tool_path
from sandbox.devenv.workload import Workload, token_workload
from sandbox.errors import ControlPlaneError
from sandbox.gateway.rbac import gateway_rbac
from sandbox.kube.apply import apply
from sandbox.kube.clients import install_crds, kube_client
from sandbox.policy.defaults import default_policies, manifest
from sandbox.provision.accelerator_admission import apply_accelerator_policies
from sandbox.storage.admission import apply_claim_policies

__all__ = ["Stack", "StackSettings", "examples", "running_stack", "seed_storage"]

SYSTEM_NS = "regsandbox-system"
AUDIT_ORIGIN = "audit.regsandbox.local/log"
REGION = "onprem:lu-national-1"
OUTBOX_BUCKET = "regsandbox-outbox"
"""Where sandboxes leave artifacts for export (prefix ``<sandbox id>/outbox/``)."""
EXPORT_BUCKET = "lux-bank-models-eu"
"""A registered export destination, in an EEA region."""

_SAMPLES: dict[str, dict[str, bytes]] = {
    "lux-bank-datasets": {
        "transactions/2024/part-0001.csv": (
            b"txn_id,amount,merchant,label\n1,12.50,m1,0\n2,9800.00,m9,1\n"
        ),
        "transactions/2024/part-0002.csv": b"txn_id,amount,merchant,label\n3,3.20,m2,0\n",
    },
    "lux-bank-analytics": {"customers/all.csv": b"customer_id,name\n1,redacted\n"},
}


@dataclass
class StackSettings:
    """Where the stack keeps its state and which examples it loads."""

    directory: Path
    repo: Path
    examples: tuple[str, ...] = ("finance", "health")
    resync_seconds: float = 2.0
    progress: Callable[[str], None] = field(default=lambda _m: None)
    key_provider: str = "local"
    """``local``, or ``pkcs11``: a SoftHSM2 token under ``<directory>/softhsm``."""


@dataclass
class ServiceProcess:
    """A long-running child process with its own log."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def check(self) -> None:
        """Raise if the process has died."""
        if self.proc.poll() is not None:
            raise ControlPlaneError(
                f"{self.name} exited with {self.proc.returncode}; last lines of {self.log}:\n"
                + log_tail(self.log)
            )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(name: str, args: list[str], env: dict[str, str], log: Path) -> ServiceProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", *args],
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return ServiceProcess(name, proc, log)


def _wait_http(service: ServiceProcess, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        service.check()
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise ControlPlaneError(f"{service.name} did not answer {url} in {timeout}s")


@dataclass
class Stack:
    """Handles to everything :func:`running_stack` started."""

    plane: ControlPlane
    admin: client.ApiClient
    minio: MinioServer
    audit_url: str
    audit_log: Path
    gateway_url: str
    operator: OperatorProcess
    services: list[ServiceProcess]

    kind: str = "processes"
    """What runs the components: ``processes`` on this machine."""
    metrics: dict[str, str] = field(default_factory=dict)
    """Prometheus endpoints by component (``operator``, ``gateway``, ``audit``)."""

    def check(self) -> None:
        """Raise if any process died."""
        for service in self.services:
            service.check()
        if not self.operator.alive():
            raise ControlPlaneError(f"the operator exited:\n{self.operator.tail()}")

    def workload(self, namespace: str) -> Workload:
        """The sandbox's workload: no node here, so a bound token used from this machine."""
        return token_workload(self.admin, namespace, self.gateway_url)


def seed_storage(minio: MinioServer) -> None:
    """The sample datasets' buckets and objects, the outbox and the export destination."""
    s3 = minio.client()
    for bucket in (OUTBOX_BUCKET, EXPORT_BUCKET):
        s3.create_bucket(Bucket=bucket)
    for bucket, objects in _SAMPLES.items():
        s3.create_bucket(Bucket=bucket)
        for object_key, body in objects.items():
            s3.put_object(Bucket=bucket, Key=object_key, Body=body)


def examples(repo: Path, sectors: tuple[str, ...], minio: MinioServer) -> list[dict[str, Any]]:
    """Tenant and Dataset manifests of the examples, datasets pointed at the local MinIO."""
    docs: list[dict[str, Any]] = []
    for sector in sectors:
        for name in ("tenant.yaml", "datasets.yaml"):
            for doc in yaml.safe_load_all((repo / "examples" / sector / name).read_text()):
                if not doc:
                    continue
                if doc["kind"] == "Dataset":
                    doc["spec"]["location"]["endpoint"] = minio.endpoint
                docs.append(doc)
    return docs


@contextmanager
def running_stack(settings: StackSettings) -> Iterator[Stack]:
    """Start everything, yield handles, and stop everything on exit (also on errors)."""
    say = settings.progress
    base = settings.directory.resolve()
    with ExitStack() as stack:
        say("starting the control plane")
        plane = ControlPlane(base / "cp")
        plane.up()
        stack.callback(plane.down)
        admin = kube_client(plane.admin_kubeconfig)
        say("installing CRDs and RBAC")
        install_crds(admin, settings.repo / "charts/regsandbox/crds")
        install_operator_rbac(admin, SYSTEM_NS)
        apply_admission_policies(admin)
        apply_claim_policies(admin)
        apply_accelerator_policies(admin)
        for obj in gateway_rbac(SYSTEM_NS):
            apply(admin, obj)

        say("starting MinIO with sample datasets")
        minio = stack.enter_context(running_minio(base / "minio"))
        seed_storage(minio)

        say("starting the audit service")
        audit_dir = base / "audit"
        key = audit_dir / "signing.key"
        # The checkpoint anchor lives beside the log here; in the chart it is a ConfigMap.
        anchor = audit_dir / "anchor" / "checkpoint"
        if not (audit_dir / "log" / "log.json").exists():
            audit_dir.mkdir(parents=True, exist_ok=True)
            key.unlink(missing_ok=True)
            anchor.unlink(missing_ok=True)  # a new log starts a new history
            AuditLog.create(
                audit_dir / "log", AUDIT_ORIGIN, generate_key_file(key, AUDIT_ORIGIN)
            ).close()
        tokens = {
            "operator": secrets.token_urlsafe(32),
            "gateway": secrets.token_urlsafe(32),
        }
        writers = audit_dir / "writers"
        writers.write_text(
            "".join(
                f"{hashlib.sha256(token.encode()).hexdigest()} "
                f"system:serviceaccount:{SYSTEM_NS}:regsandbox-{component}\n"
                for component, token in tokens.items()
            )
        )
        for name, token in tokens.items():
            path = audit_dir / f"{name}.token"
            path.touch(mode=0o600, exist_ok=True)
            path.write_text(token)
        audit_port = free_port()
        audit_url = f"http://127.0.0.1:{audit_port}"
        logs = base / "logs"
        audit = _spawn(
            "audit service",
            [
                "audit",
                "serve",
                "--log",
                str(audit_dir / "log"),
                "--key",
                str(key),
                "--writers",
                str(writers),
                "--anchor-file",
                str(anchor),
                "--listen",
                f"127.0.0.1:{audit_port}",
                "--open-reads",
            ],
            {},
            logs / "audit.log",
        )
        stack.callback(audit.stop)
        _wait_http(audit, f"{audit_url}/healthz")

        say("starting the dataset gateway")
        gateway_port = free_port()
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        gateway_metrics = free_port()
        gw_kubeconfig = service_account_kubeconfig(
            admin, SYSTEM_NS, base / "gateway.kubeconfig", service_account="regsandbox-gateway"
        )
        gateway = _spawn(
            "gateway",
            [
                "gateway",
                "serve",
                "--listen",
                f"127.0.0.1:{gateway_port}",
                "--kubeconfig",
                str(gw_kubeconfig),
                "--audit-url",
                audit_url,
                "--metrics-listen",
                f"127.0.0.1:{gateway_metrics}",
            ],
            {
                "REGSANDBOX_GATEWAY_AUDIT_TOKEN_FILE": str(audit_dir / "gateway.token"),
                "REGSANDBOX_GATEWAY_S3_ACCESS_KEY_ID": minio.access_key,
                "REGSANDBOX_GATEWAY_S3_SECRET_ACCESS_KEY": minio.secret_key,
                "REGSANDBOX_GATEWAY_S3_ENDPOINTS": json.dumps([minio.endpoint]),
                # workloads write their models into their own outbox through the gateway
                "REGSANDBOX_GATEWAY_OUTBOX_BUCKET": OUTBOX_BUCKET,
                "REGSANDBOX_GATEWAY_OUTBOX_ENDPOINT": minio.endpoint,
            },
            logs / "gateway.log",
        )
        stack.callback(gateway.stop)
        _wait_http(gateway, f"{gateway_url}/healthz")

        say("starting the operator")
        op_kubeconfig = service_account_kubeconfig(admin, SYSTEM_NS, base / "operator.kubeconfig")
        keys_env: dict[str, str] = {}
        if settings.key_provider == "pkcs11":
            say("initialising the SoftHSM2 token for the pkcs11 key provider")
            hsm = init_softhsm(base / "softhsm")
            apply(admin, hsm.pin_secret(SYSTEM_NS))  # where the chart reads the PIN
            keys_env = hsm.operator_env()
        operator_metrics = free_port()
        operator = OperatorProcess(
            op_kubeconfig,
            {
                "REGSANDBOX_CLUSTER_REGION": REGION,
                "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
                "REGSANDBOX_NAMESPACE": SYSTEM_NS,
                "REGSANDBOX_AUDIT_URL": audit_url,
                "REGSANDBOX_AUDIT_TOKEN_FILE": str(audit_dir / "operator.token"),
                "REGSANDBOX_RESYNC_SECONDS": str(settings.resync_seconds),
                "REGSANDBOX_METRICS_PORT": str(operator_metrics),
                "REGSANDBOX_POLICY_DIR": str(settings.repo / "policies"),
                "REGSANDBOX_OPA_CHECK_BINARY": str(tool_path("opa")),
                "REGSANDBOX_EXPORT_RESYNC_SECONDS": str(settings.resync_seconds),
                "REGSANDBOX_EXPORT_OUTBOX": json.dumps(
                    {
                        "bucket": OUTBOX_BUCKET,
                        "endpoint": minio.endpoint,
                        "access_key_id": minio.access_key,
                        "secret_access_key": minio.secret_key,
                        "destinations": {EXPORT_BUCKET: {"region": "aws:eu-central-1"}},
                    }
                ),
                **keys_env,
            },
            logs / "operator.log",
        ).start()
        stack.callback(operator.stop)

        say("applying the default SandboxPolicies and the example tenants and datasets")
        for policy in default_policies(settings.repo / "policies"):
            apply(admin, manifest(policy))
        for doc in examples(settings.repo, settings.examples, minio):
            apply(admin, doc)
        yield Stack(
            plane=plane,
            admin=admin,
            minio=minio,
            audit_url=audit_url,
            audit_log=audit_dir / "log",
            gateway_url=gateway_url,
            operator=operator,
            services=[audit, gateway],
            metrics={
                "operator": f"http://127.0.0.1:{operator_metrics}/metrics",
                "gateway": f"http://127.0.0.1:{gateway_metrics}/metrics",
                "audit": f"{audit_url}/metrics",
            },
        )
