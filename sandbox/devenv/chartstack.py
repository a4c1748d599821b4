"""The whole of regsandbox on a local node, installed from the Helm chart.

What ``make up`` and ``make demo`` run where the machine can host a node (root, network
namespaces; see :func:`sandbox.devenv.dataplane.unavailable_reason`): a control plane with
a node, MinIO on the node's link with the sample datasets, the chart installed from the
locally built images (operator with its OPA sidecar, two gateways, the audit service) with
the export airlock configured, the example tenants and datasets applied, and sandbox
workloads that are real pods. Elsewhere :mod:`sandbox.devenv.stack` runs the same
components as processes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from sandbox.api.conditions import is_true
from sandbox.devenv.chart import (
    APP_UID,
    ChartRelease,
    diagnosis,
    install_chart,
    release_ready,
    uninstall_chart,
    wait_release_ready,
)
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.minio import MinioServer, running_minio
from sandbox.devenv.stack import (
    EXPORT_BUCKET,
    OUTBOX_BUCKET,
    SYSTEM_NS,
    StackSettings,
    examples,
    seed_storage,
)
from sandbox.devenv.toolchain import tool_path
from sandbox.devenv.workload import PodWorkload, start_pod_workload
from sandbox.errors import ControlPlaneError
from sandbox.kube.apply import apply, get
from sandbox.kube.clients import kube_client
from sandbox.policy.defaults import default_policies

__all__ = ["ChartStack", "running_chart_stack"]

RELEASE = "regsandbox"
OUTBOX_CREDENTIALS = "regsandbox-outbox-s3"
"""Secret with the operator's object-store credentials for the export airlock."""


@dataclass
class ChartStack:
    """Handles to what :func:`running_chart_stack` started and installed."""

    plane: ControlPlane
    admin: client.ApiClient
    minio: MinioServer
    release: ChartRelease
    kind: str = "chart"
    """What runs the components: the Helm chart's pods on a local node."""

    @property
    def audit_log(self) -> Path:
        """The audit service's log, on the host directory behind its volume."""
        return self.release.audit_volume / "log"

    @property
    def gateway_url(self) -> str:
        """The gateway Service as pods reach it (cluster DNS)."""
        port = self.release.gateway_port
        return (
            f"http://{self.release.name}-gateway.{self.release.namespace}.svc.cluster.local:{port}"
        )

    @property
    def image(self) -> str:
        """The locally built regsandbox image (it also serves as the workload image)."""
        return next(i for i in self.release.images if "/regsandbox:" in i)

    def check(self) -> None:
        """Raise, with the pods' state and logs, if a component of the release is not Ready."""
        if not release_ready(self.admin, self.release):
            raise ControlPlaneError(
                f"release {self.release.name} is no longer Ready:\n"
                + diagnosis(self.admin, self.release)
            )

    def workload(self, namespace: str) -> PodWorkload:
        """Start the sandbox's workload as a real pod in ``namespace`` (waits until Ready)."""
        return start_pod_workload(
            self.admin,
            kubectl=tool_path("kubectl"),
            kubeconfig=self.plane.admin_kubeconfig,
            namespace=namespace,
            image=self.image,
            uid=APP_UID,
            gateway_url=self.gateway_url,
        )


def _wait_policies_accepted(api: client.ApiClient, repo: Path, timeout: float) -> None:
    """Wait (bounded) until every default SandboxPolicy of the chart is Accepted.

    The operator starts with the audit service; until the service answers, it records
    nothing and so accepts nothing (fail closed), and retries with kopf's back-off.
    """
    names = [policy.name for policy in default_policies(repo / "policies")]
    deadline = time.monotonic() + timeout
    while True:
        pending = [
            name
            for name in names
            if not is_true(
                ((get(api, "SandboxPolicy", name) or {}).get("status") or {}).get("conditions"),
                "Accepted",
            )
        ]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ControlPlaneError(
                f"the operator did not accept the default SandboxPolicies {pending} "
                f"in {timeout:.0f}s"
            )
        time.sleep(1.0)


def _outbox_values(minio: MinioServer) -> dict[str, object]:
    return {
        "enabled": True,
        "bucket": OUTBOX_BUCKET,
        "endpoint": minio.endpoint,
        "credentialsSecret": OUTBOX_CREDENTIALS,
        "destinations": {EXPORT_BUCKET: {"region": "aws:eu-central-1"}},
    }


@contextmanager
def running_chart_stack(settings: StackSettings, timeout: float = 300.0) -> Iterator[ChartStack]:
    """Start a node, install the chart, load the examples; undo it all on exit."""
    say = settings.progress
    base = settings.directory.resolve()
    with ExitStack() as stack:
        plane = ControlPlane(base / "cp", data_plane=True)
        stack.callback(plane.down)
        plane.up(timeout=timeout, progress=say)
        state = plane.load_state()
        if state is None:
            raise ControlPlaneError("the control plane started but left no state")
        admin = kube_client(plane.admin_kubeconfig)

        say(f"starting MinIO with sample datasets on the node's link ({state.bind_address})")
        minio = stack.enter_context(running_minio(base / "minio", host=state.bind_address))
        seed_storage(minio)
        apply(admin, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NS}})
        apply(
            admin,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": OUTBOX_CREDENTIALS, "namespace": SYSTEM_NS},
                "data": {
                    "AWS_ACCESS_KEY_ID": base64.b64encode(minio.access_key.encode()).decode(),
                    "AWS_SECRET_ACCESS_KEY": base64.b64encode(minio.secret_key.encode()).decode(),
                },
            },
        )
        release = install_chart(
            plane,
            repo=settings.repo,
            storage=minio,
            directory=base / "release",
            release=RELEASE,
            namespace=SYSTEM_NS,
            values={
                "operator": {
                    "resyncSeconds": settings.resync_seconds,
                    "exportOutbox": _outbox_values(minio),
                }
            },
            progress=say,
        )
        stack.callback(uninstall_chart, release)
        say("waiting for the operator (with its OPA sidecar), the gateways and the audit service")
        waited = wait_release_ready(admin, release, timeout=timeout)
        say(f"release {release.name} Ready in {waited:.0f}s")

        say("applying the example tenants and datasets (the chart installed the default policies)")
        for doc in examples(settings.repo, settings.examples, minio):
            apply(admin, doc)
        say("waiting for the operator to accept the default SandboxPolicies")
        _wait_policies_accepted(admin, settings.repo, timeout)
        yield ChartStack(plane=plane, admin=admin, minio=minio, release=release)
