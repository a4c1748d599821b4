"""The Helm chart installed on a real node from locally built images, every component Ready.

A control plane with a node of its own (the chart's cluster-scoped RBAC and its operator
must not meet the session's operator process), the ``regsandbox`` and ``opa`` images
built from this checkout and imported into the node's containerd, MinIO where pods can
reach it, and then ``helm install`` as a platform engineer would run it, with
``imagePullPolicy: Never``: the operator with its OPA sidecar, two gateway replicas and
the audit service must all become Ready, and the operator in its pod must provision a
sandbox, recorded by the audit service in its pod, in a log that verifies offline. Then
the tour's data path in pods alone: a workload in a sandbox reads a granted dataset
through the chart's gateway Service, and the audit service's log names that pod.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.chart import APP_UID, ChartRelease, wait_release_ready
from sandbox.devenv.chartstack import ChartStack
from sandbox.devenv.demo import DemoStepError, run_tour
from sandbox.devenv.minio import MinioServer
from sandbox.devenv.toolchain import tool_path
from sandbox.errors import ControlPlaneError

from .pods import Kubectl, unique, wait_for, wait_running
from .stacks import audit_entries, chart_stack, granted_sandbox, require_data_plane
from .test_gateway_reads import READ, TOKEN_DIR, _workload

pytestmark = pytest.mark.dataplane

NAMESPACE = "regsandbox-system"


@dataclass(frozen=True)
class Installed:
    stack: ChartStack
    release: ChartRelease
    api: client.ApiClient
    kubectl: Kubectl
    storage: MinioServer


@pytest.fixture(scope="module")
def installed(repo_root: Path) -> Iterator[Installed]:
    """What ``make up`` runs on a node: the chart from local images, MinIO, the examples.

    A control plane with a node for this module alone, so the chart's cluster-scoped RBAC
    and its operator do not meet the session's operator process.
    """
    require_data_plane()
    with chart_stack(repo_root, "regsandbox-chart-dp-") as stack:
        yield Installed(
            stack,
            stack.release,
            stack.admin,
            Kubectl(tool_path("kubectl"), stack.plane.admin_kubeconfig),
            stack.minio,
        )


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
        "operator": installed.release.operator_replicas,
        "gateway": installed.release.gateway_replicas,
        "audit": 1,
    }
    assert installed.release.operator_replicas == 2  # one leads, one stands by
    # Each operator pod runs both containers, the OPA sidecar from the local opa image.
    for operator in by_component["operator"]:
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


def test_the_tour_of_make_demo_runs_against_the_chart_with_real_workload_pods(
    installed: Installed, repo_root: Path
) -> None:
    """``make demo`` on the chart: every step, its workload a real pod in the sandbox."""
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

    try:
        steps = run_tour(installed.stack, repo_root)
    except DemoStepError as exc:
        raise AssertionError(f"the tour stopped: {exc}") from None
    workload_steps = [s for s in steps if s.who.startswith("workload")]
    assert len(workload_steps) == 2, [s.who for s in steps]
    assert all("pod trainer in sbx-lux-bank-fraud-model" in s.who for s in workload_steps)

    # The audit service's log, on its volume, verifies offline and names who acted.
    log = installed.release.audit_volume / "log"
    verify = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "audit", "verify", "--log", str(log)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    entries = audit_entries(log)
    provisioned = [e for e in entries if e["action"] == "sandbox.provisioned"]
    assert provisioned, [e["action"] for e in entries]
    # Recorded as the operator's ServiceAccount: the identity whose token the chart issued.
    actors = {e["actor"].get("user") for e in provisioned}
    assert actors == {f"system:serviceaccount:{NAMESPACE}:regsandbox-operator"}, provisioned
    # The workload's reads and its model write name the pod that really ran them.
    pod = "sbx-lux-bank-fraud-model/trainer"
    reads = [
        e
        for e in entries
        if e["action"] == "dataset.read" and e["resource"].get("name") == "lux-bank-transactions"
    ]
    assert reads, [e["action"] for e in entries]
    assert {e["actor"]["pod"] for e in reads} == {pod}, reads
    writes = [e for e in entries if e["action"] == "model.artifact.written"]
    # the model written, then the second write under its name refused — both by the pod
    assert [e["outcome"] for e in writes] == ["success", "denied"], writes
    assert {e["actor"]["pod"] for e in writes} == {pod}, writes
    assert [e for e in entries if e["action"] == "model.export.released"], entries[-5:]
    assert [e for e in entries if e["action"] == "key.destroyed"], entries[-5:]


def test_a_workload_pod_reads_through_the_charts_gateway_and_the_audit_service_names_it(
    installed: Installed,
) -> None:
    """The data path of the tour, all in pods: sandbox workload → gateway → MinIO → audit."""
    api, kubectl = installed.api, installed.kubectl
    _wait_ready(installed)
    data = secrets.token_bytes(64 * 1024)
    s3 = installed.storage.client()
    s3.create_bucket(Bucket="chart-datasets")
    s3.put_object(Bucket="chart-datasets", Key="claims/part-0001.bin", Body=data)
    dataset, tenant, sandbox = unique("claims"), unique("tc"), unique("sbx")
    namespace = granted_sandbox(
        installed.stack, bucket="chart-datasets", dataset=dataset, tenant=tenant, sandbox=sandbox
    )
    image = next(i for i in installed.release.images if "/regsandbox:" in i)
    client.CoreV1Api(api).create_namespaced_pod(namespace, _workload(namespace, image))
    wait_running(api, namespace, "trainer", timeout=120)

    url = (
        f"http://{installed.release.name}-gateway.{NAMESPACE}.svc.cluster.local:8443"
        f"/v1/datasets/{dataset}/objects/part-0001.bin"
    )
    read = kubectl.exec(namespace, "trainer", "python3", "-c", READ, url, f"{TOKEN_DIR}/token")
    assert read.returncode == 0, read.stderr
    answer = json.loads(read.stdout.strip().splitlines()[-1])
    assert answer["status"] == 200, answer
    assert answer["sha256"] == hashlib.sha256(data).hexdigest()

    # The gateway pod appended the read to the audit service's log before answering.
    log = installed.release.audit_volume / "log"

    def reads() -> list[dict[str, Any]]:
        return [
            e
            for e in audit_entries(log)
            if e["action"] == "dataset.read" and e["actor"].get("pod", "").startswith(namespace)
        ]

    [entry] = wait_for(reads, 30, "the read's audit entry")
    assert entry["actor"]["pod"] == f"{namespace}/trainer"
    assert entry["details"]["sha256"] == answer["sha256"]
    assert entry["outcome"] == "success"
