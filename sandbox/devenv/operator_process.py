"""Run ``sandbox-operator`` as a real process against a control plane (tests, ``make up``).

The operator runs under the identity the chart gives it: a ServiceAccount bound to the
generated ClusterRole, authenticated by a bearer token from the TokenRequest API — not
the administrator's certificate — so anything it lacks permission for fails loudly.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.devenv.processes import log_tail
from sandbox.kube.apply import apply
from sandbox.provision.rbac import OPERATOR_SERVICE_ACCOUNT, cluster_roles, operator_rbac

__all__ = ["OperatorProcess", "install_operator_rbac", "service_account_kubeconfig"]


def install_operator_rbac(api: client.ApiClient, namespace: str) -> None:
    """Create the operator's namespace, ServiceAccount and the shipped RBAC."""
    apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for obj in [*cluster_roles(), *operator_rbac(namespace)]:
        apply(api, obj)


def service_account_kubeconfig(
    api: client.ApiClient,
    namespace: str,
    path: Path,
    service_account: str = OPERATOR_SERVICE_ACCOUNT,
    hours: int = 12,
) -> Path:
    """Write a kubeconfig that authenticates as ``service_account`` with a bound token."""
    core = client.CoreV1Api(api)
    token = core.create_namespaced_service_account_token(
        service_account,
        namespace,
        client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=hours * 3600)
        ),
    ).status.token
    cfg = api.configuration
    ca = Path(cfg.ssl_ca_cert).read_bytes()
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "cluster",
                "cluster": {
                    "server": cfg.host,
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
        ],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "cluster", "user": service_account}}],
        "current-context": "sa",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


class OperatorProcess:
    """One ``sandbox-operator run`` process with its log file."""

    _started: ClassVar[list[OperatorProcess]] = []

    @classmethod
    def running(cls) -> list[OperatorProcess]:
        """Every operator this Python process started that is still alive (a test that
        needs the cluster to itself stops them, and starts them again afterwards)."""
        return [proc for proc in cls._started if proc.alive()]

    def __init__(self, kubeconfig: Path, env: dict[str, str], log: Path) -> None:
        """Prepare (not start) an operator using ``kubeconfig`` and ``REGSANDBOX_*`` ``env``."""
        self.kubeconfig = kubeconfig
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        """Start the process; returns self."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "operators.main",
                    "run",
                    "--kubeconfig",
                    str(self.kubeconfig),
                ],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if self not in OperatorProcess._started:
            OperatorProcess._started.append(self)
        return self

    @property
    def pid(self) -> int | None:
        """The process id while started."""
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the crash a reconcile must survive."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        """The last lines of the operator's log."""
        return log_tail(self.log, lines)

    def wait_until(self, check: Any, timeout: float, what: str) -> Any:
        """Poll ``check()`` until it returns a truthy value; fail with the operator's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the operator exited while waiting for {what}:\n{self.tail()}")
            try:
                value = check()
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise
                value = None
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}:\n{self.tail()}")
