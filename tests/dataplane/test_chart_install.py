"""The Helm chart installed on a real node from locally built images, every component Ready.

A control plane with a node of its own (the chart's cluster-scoped RBAC and its operator
must not meet the session's operator process), the ``regsandbox`` and ``opa`` images
built from this checkout and imported into the node's containerd, MinIO where pods can
reach it, and then ``helm install`` as a platform engineer would run it, with
``imagePullPolicy: Never``: the operator with its OPA sidecar, two gateway replicas and
the audit service must all become Ready, and the operator in its pod must provision a
sandbox, recorded by the audit service in its pod, in a log that verifies offline.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from sandbox.devenv.chart import (
    APP_UID,
    ChartRelease,
    install_chart,
    uninstall_chart,
    wait_release_ready,
)
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.dataplane import unavailable_reason
from sandbox.devenv.minio import MinioServer, running_minio
from sandbox.devenv.toolchain import tool_path
from sandbox.errors import ControlPlaneError
from sandbox.kube.apply import apply, get
from sandbox.testing import api_client

from .pods import Kubectl, wait_for

pytestmark = pytest.mark.dataplane

NAMESPACE = "regsandbox-system"


@dataclass(frozen=True)
class Installed:
    release: ChartRelease
    api: client.ApiClient
    kubectl: Kubectl
    storage: MinioServer


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def chart_node() -> Iterator[ControlPlane]:
    """A control plane with a node, for this module alone."""
    reason = unavailable_reason()
    if reason is not None:
        if _in_ci():
            pytest.fail(f"CI must run the data-plane tests, but: {reason}", pytrace=False)
        pytest.skip(f"no data plane on this machine: {reason}")
    # Outside pytest's base temp: with several sessions at once, pytest renames the
    # directories of older sessions away while they run, and down() must find its own.
    directory = Path(tempfile.mkdtemp(prefix="regsandbox-chart-dp-"))
    plane = ControlPlane(directory, data_plane=True)
    try:
        plane.up(timeout=300.0)
        yield plane
    finally:
        plane.down()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def installed(
    chart_node: ControlPlane, repo_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installed]:
    """The chart with every default but the images, MinIO and the OPA sidecar."""
    state = chart_node.load_state()
    assert state is not None
    base = tmp_path_factory.mktemp("chart-install")
    with running_minio(base / "minio", host=state.bind_address) as storage:
        release = install_chart(
            chart_node,
            repo=repo_root,
            storage=storage,
            directory=base / "release",
            release="rs",
            namespace=NAMESPACE,
            values={"operator": {"resyncSeconds": 5}},
        )
        try:
            yield Installed(
                release,
                api_client(chart_node.admin_kubeconfig),
                Kubectl(tool_path("kubectl"), chart_node.admin_kubeconfig),
                storage,
            )
        finally:
            uninstall_chart(release)


def _wait_ready(installed: Installed) -> None:
    try:
        wait_release_ready(installed.api, installed.release, timeout=240)
    except ControlPlaneError as exc:
        raise AssertionError(str(exc)) from None


def test_every_component_of_the_chart_becomes_ready_from_local_images(
    installed: Installed,
) -> None:
    api, kubectl = installed.api, installed.kubectl
    _wait_ready(installed)

    core = client.CoreV1Api(api)
    pods = core.list_namespaced_pod(NAMESPACE).items
    by_component: dict[str, list[client.V1Pod]] = {}
    for pod in pods:
        component = pod.metadata.labels["app.kubernetes.io/component"]
        by_component.setdefault(component, []).append(pod)
    assert {c: len(p) for c, p in by_component.items()} == {
        "operator": 1,
        "gateway": 2,
        "audit": 1,
    }
    # The operator pod runs both containers, the OPA sidecar from the local opa image.
    [operator] = by_component["operator"]
    containers = {s.name: s for s in operator.status.container_statuses}
    assert set(containers) == {"operator", "opa"}
    assert all(s.ready for s in containers.values()), containers
    local = set(installed.release.images)
    for pod in pods:
        for spec in pod.spec.containers + (pod.spec.init_containers or []):
            assert spec.image in local, f"{pod.metadata.name}/{spec.name} runs {spec.image}"
            assert spec.image_pull_policy == "Never", f"{pod.metadata.name}/{spec.name}"
    # Each pod runs as the image's non-root user.
    for pod in pods:
        container = pod.spec.containers[0].name
        who = kubectl.run(
            "exec", "-n", NAMESPACE, pod.metadata.name, "-c", container, "--", "id", "-u"
        )
        assert who.stdout.strip() == str(APP_UID), who.stdout + who.stderr


def test_gateway_pods_reach_minio_and_the_operator_pod_provisions_through_opa_and_audit(
    installed: Installed, repo_root: Path
) -> None:
    api, kubectl = installed.api, installed.kubectl
    _wait_ready(installed)
    gateway = (
        client.CoreV1Api(api)
        .list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/component=gateway")
        .items[0]
    )
    # The gateway (which holds the storage credentials) reaches MinIO from its pod.
    probe = (
        "import urllib.request, sys; "
        f"r = urllib.request.urlopen('{installed.storage.endpoint}/minio/health/live', timeout=5); "
        "print(r.status)"
    )
    reached = kubectl.exec(NAMESPACE, gateway.metadata.name, "python", "-c", probe)
    assert reached.stdout.strip() == "200", reached.stdout + reached.stderr

    # The operator in its pod: policy by the OPA sidecar, provisioning, audit records.
    for name in ("tenant.yaml", "datasets.yaml", "sandbox-fraud-model.yaml"):
        for doc in yaml.safe_load_all((repo_root / "examples/finance" / name).read_text()):
            if not doc:
                continue
            if doc["kind"] == "Sandbox":
                wait_for(lambda: get(api, "Namespace", "tenant-lux-bank"), 60, "the tenant's home")
            apply(api, doc)

    def sandbox_ready() -> bool:
        obj = get(api, "Sandbox", "fraud-model", "tenant-lux-bank") or {}
        return any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        )

    try:
        wait_for(sandbox_ready, 120, "the example sandbox Ready")
    except TimeoutError as exc:
        sandbox = get(api, "Sandbox", "fraud-model", "tenant-lux-bank")
        raise AssertionError(f"{exc}: {sandbox}") from None

    # The audit service's log, on its volume, verifies offline and names the operator.
    log = installed.release.audit_volume / "log"
    verify = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "audit", "verify", "--log", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "audit", "log", "--log", str(log), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    entries = json.loads(listed.stdout)
    provisioned = [e for e in entries if e.get("action") == "sandbox.provisioned"]
    assert provisioned, [e.get("action") for e in entries]
    # Recorded as the operator's ServiceAccount: the identity whose token the chart issued.
    actors = {e["actor"].get("user") for e in provisioned}
    assert actors == {f"system:serviceaccount:{NAMESPACE}:regsandbox-operator"}, provisioned
