"""A workload pod reads a granted dataset through the gateway, from inside the cluster.

The gateway runs as a pod of the locally built regsandbox image in ``regsandbox-system``
with the chart's labels, so the sandbox's ``allow-dataset-gateway`` NetworkPolicy is
what lets the workload reach it (by the Service's DNS name, through CoreDNS). The
workload authenticates with its projected ServiceAccount token; the gateway reviews it
with the API server, reads MinIO and writes its audit log before answering.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from audit.log import AuditLog, LogReader
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.images import image_ref, import_images
from sandbox.devenv.minio import MinioServer
from sandbox.devenv.operator_process import OperatorProcess
from sandbox.devenv.workload import TOKEN_DIR as WORKLOAD_TOKEN_DIR
from sandbox.devenv.workload import workload_pod
from sandbox.gateway.rbac import GATEWAY_NAME, gateway_rbac
from sandbox.gateway.settings import GatewaySettings
from sandbox.kube.apply import apply, delete, get
from sandbox.provision.names import sandbox_namespace
from sandbox.provision.sandbox_plan import IsolationSettings
from sandbox.testing import sandbox_manifest

from .pods import SYSTEM_NS, Kubectl, unique, wait_for, wait_running

pytestmark = [pytest.mark.dataplane, pytest.mark.integration]

ORIGIN = "audit.regsandbox.test/dataplane-gateway"
GATEWAY_UID = 10001
BUCKET = "dp-datasets"
KEY = "claims/2024/part-0001.bin"
TOKEN_DIR = WORKLOAD_TOKEN_DIR

READ = """
import hashlib, json, sys, urllib.error, urllib.request
token = open(sys.argv[2]).read().strip()
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + token})
try:
    with urllib.request.urlopen(request, timeout=15) as response:
        body = response.read()
        print(json.dumps({"status": response.status, "sha256": hashlib.sha256(body).hexdigest(),
                          "bytes": len(body)}))
except urllib.error.HTTPError as exc:
    print(json.dumps({"status": exc.code, "body": exc.read().decode(errors="replace")[:400]}))
except OSError as exc:  # no connection at all (e.g. the sandbox's network was cut)
    print(json.dumps({"status": 0, "body": str(exc)[:400]}))
"""


@dataclass
class GatewayWorld:
    tenant: str
    sandbox: str
    namespace: str
    dataset: str
    digest: str
    size: int
    audit_log: Path
    url: str
    image: str


def _gateway_objects(
    image: str, audit_dir: Path, storage: MinioServer, settings: IsolationSettings
) -> list[dict[str, Any]]:
    labels = dict(settings.gateway_pod_labels)
    env = {
        "REGSANDBOX_GATEWAY_AUDIT_LOG_DIR": "/audit/log",
        "REGSANDBOX_GATEWAY_AUDIT_SIGNING_KEY": "/audit/signing.key",
        "REGSANDBOX_GATEWAY_S3_ENDPOINTS": json.dumps([storage.endpoint]),
        "REGSANDBOX_GATEWAY_REVIEW_CACHE_SECONDS": "0",
    }
    return [
        *gateway_rbac(SYSTEM_NS),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gateway-s3", "namespace": SYSTEM_NS},
            "stringData": {
                "REGSANDBOX_GATEWAY_S3_ACCESS_KEY_ID": storage.access_key,
                "REGSANDBOX_GATEWAY_S3_SECRET_ACCESS_KEY": storage.secret_key,
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "gateway", "namespace": SYSTEM_NS, "labels": labels},
            "spec": {
                "serviceAccountName": GATEWAY_NAME,
                "terminationGracePeriodSeconds": 1,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": GATEWAY_UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "gateway",
                        "image": image,
                        "imagePullPolicy": "Never",
                        "command": [
                            "sandboxctl",
                            "gateway",
                            "serve",
                            "--listen",
                            f"0.0.0.0:{settings.gateway_port}",
                        ],
                        "env": [{"name": k, "value": v} for k, v in env.items()],
                        "envFrom": [{"secretRef": {"name": "gateway-s3"}}],
                        "ports": [{"containerPort": settings.gateway_port}],
                        "readinessProbe": {
                            "httpGet": {"path": "/healthz", "port": settings.gateway_port},
                            "periodSeconds": 1,
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "audit", "mountPath": "/audit"}],
                    }
                ],
                "volumes": [
                    {"name": "audit", "hostPath": {"path": str(audit_dir), "type": "Directory"}}
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": GATEWAY_NAME, "namespace": SYSTEM_NS},
            "spec": {
                "selector": labels,
                "ports": [{"port": settings.gateway_port, "targetPort": settings.gateway_port}],
            },
        },
    ]


def _workload(namespace: str, image: str) -> dict[str, Any]:
    """The tour's workload pod (restricted, projected gateway token), named ``trainer``."""
    return workload_pod("trainer", namespace, image, GATEWAY_UID)


def _grants(api: client.ApiClient, tenant: str, sandbox: str) -> dict[str, bool]:
    obj = get(api, "Sandbox", sandbox, f"tenant-{tenant}") or {}
    return {d["name"]: d["granted"] for d in (obj.get("status") or {}).get("datasets") or []}


def _granted_sandbox(
    api: client.ApiClient,
    operator: OperatorProcess,
    tenant: str,
    dataset: str,
    image: str,
    **spec: Any,
) -> tuple[str, str]:
    """A Sandbox granted ``dataset`` with a Running workload pod ``trainer``."""
    sandbox = unique("sbx")
    apply(
        api,
        sandbox_manifest(
            sandbox,
            tenant,
            resources={"cpu": "2", "memory": "2Gi", "storage": "1Gi"},
            datasets=[{"name": dataset, "purpose": "fraud-detection"}],
            **spec,
        ),
    )
    operator.wait_until(lambda: _grants(api, tenant, sandbox).get(dataset), 90, "the grant")
    namespace = sandbox_namespace(tenant, sandbox)
    client.CoreV1Api(api).create_namespaced_pod(namespace, _workload(namespace, image))
    wait_running(api, namespace, "trainer", timeout=120)
    return sandbox, namespace


@pytest.fixture(scope="module")
def gw(
    data_plane: ControlPlane,
    dp_api: client.ApiClient,
    dp_operator: OperatorProcess,
    dp_storage: MinioServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatewayWorld]:
    node = data_plane.node
    import_images(node.layout.containerd_socket, ["regsandbox"])
    image = image_ref("regsandbox")
    audit_dir = tmp_path_factory.mktemp("dp-gateway-audit")
    signer = generate_key_file(audit_dir / "signing.key", ORIGIN)
    AuditLog.create(audit_dir / "log", ORIGIN, signer).close()
    for path in (audit_dir, *audit_dir.rglob("*")):
        os.chown(path, GATEWAY_UID, GATEWAY_UID)
    settings = IsolationSettings()
    for obj in _gateway_objects(image, audit_dir, dp_storage, settings):
        apply(dp_api, obj)
    wait_running(dp_api, SYSTEM_NS, "gateway", timeout=120)

    data = secrets.token_bytes(256 * 1024)
    s3 = dp_storage.client()
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=data)
    dataset = unique("claims")
    apply(
        dp_api,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": dataset},
            "spec": {
                "sector": "finance",
                "jurisdiction": "LU",
                "location": {
                    "bucket": BUCKET,
                    "prefix": "claims/",
                    "region": "onprem:lu-national-1",
                    "endpoint": dp_storage.endpoint,
                },
                "personalData": "pseudonymised",
                "allowedPurposes": ["fraud-detection"],
                # DORA: a bank's dataset names its register entry and contracted location.
                "ictThirdParty": {"registerReference": "ROI-1", "dataLocations": ["LU"]},
            },
        },
    )
    tenant = unique("tg")
    apply(
        dp_api,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {
                "organisation": f"Org {tenant}",
                "sector": "finance",
                "jurisdiction": "LU",
                "members": [],
                "attestations": {"supervisoryAuthority": "CSSF"},
            },
        },
    )
    dp_operator.wait_until(
        lambda: get(dp_api, "Namespace", f"tenant-{tenant}"), 60, "tenant home namespace"
    )
    sandbox, namespace = _granted_sandbox(dp_api, dp_operator, tenant, dataset, image)
    url = (
        f"http://{GATEWAY_NAME}.{SYSTEM_NS}.svc.cluster.local:{settings.gateway_port}"
        f"/v1/datasets/{dataset}/objects/{KEY.removeprefix('claims/')}"
    )
    try:
        yield GatewayWorld(
            tenant=tenant,
            sandbox=sandbox,
            namespace=namespace,
            dataset=dataset,
            digest=hashlib.sha256(data).hexdigest(),
            size=len(data),
            audit_log=audit_dir / "log",
            url=url,
            image=image,
        )
    finally:
        delete(dp_api, "Tenant", tenant)
        delete(dp_api, "Dataset", dataset)
        delete(dp_api, "Pod", "gateway", SYSTEM_NS)


def _read(kubectl: Kubectl, gw: GatewayWorld, namespace: str | None = None) -> dict[str, Any]:
    result = kubectl.exec(
        namespace or gw.namespace, "trainer", "python3", "-c", READ, gw.url, f"{TOKEN_DIR}/token"
    )
    assert result.returncode == 0, result.stderr
    answer: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answer


def _audit_entries(log: Path) -> list[dict[str, Any]]:
    reader = LogReader(log)
    try:
        return [reader.entry(i).model_dump(mode="json") for i in range(reader.size)]
    finally:
        reader.close()


def test_a_pod_reads_a_granted_dataset_and_the_audit_names_it(
    kubectl: Kubectl, gw: GatewayWorld
) -> None:
    answer = _read(kubectl, gw)
    assert answer["status"] == 200, answer
    assert answer["sha256"] == gw.digest
    assert answer["bytes"] == gw.size
    entries = wait_for(
        lambda: [
            e
            for e in _audit_entries(gw.audit_log)
            if e["action"] == "dataset.read" and e["details"].get("sha256") == gw.digest
        ],
        30,
        "the read's audit entry",
    )
    assert entries[-1]["actor"]["pod"] == f"{gw.namespace}/trainer"
    assert entries[-1]["outcome"] == "success"


def test_after_revocation_the_next_read_is_refused_within_the_bound(
    dp_api: client.ApiClient,
    dp_operator: OperatorProcess,
    kubectl: Kubectl,
    gw: GatewayWorld,
) -> None:
    assert _read(kubectl, gw)["status"] == 200
    body = sandbox_manifest(
        gw.sandbox,
        gw.tenant,
        resources={"cpu": "2", "memory": "2Gi", "storage": "1Gi"},
        datasets=[],
    )
    apply(dp_api, body)
    dp_operator.wait_until(
        lambda: (
            gw.dataset not in _grants(dp_api, gw.tenant, gw.sandbox)
            or _grants(dp_api, gw.tenant, gw.sandbox)[gw.dataset] is False
        ),
        90,
        "the grant to be withdrawn",
    )
    # The documented bound: a lookup is reused for at most grant_cache_seconds, so once
    # that long has passed since the withdrawal, the very next read must be refused.
    time.sleep(GatewaySettings.model_fields["grant_cache_seconds"].default)
    answer = _read(kubectl, gw)
    assert answer["status"] == 403, answer
    assert "DatasetNotGranted" in answer["body"]


def test_after_expiry_the_next_read_is_refused_within_the_bound(
    dp_api: client.ApiClient,
    dp_operator: OperatorProcess,
    kubectl: Kubectl,
    gw: GatewayWorld,
) -> None:
    """A sandbox that ends while its pod runs: reads stop at ``expiresAt`` plus the bound.

    ``onExpiry: retain`` keeps the namespace (and the pod) after expiry, so the read is
    attempted; it is refused by the gateway (403 ``SandboxExpired``) or, once the operator
    has cut the sandbox's network, never reaches it — either way no byte is served.
    """
    ends = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=40)
    lifetime = {"expiresAt": ends.isoformat().replace("+00:00", "Z"), "onExpiry": "retain"}
    _, namespace = _granted_sandbox(
        dp_api, dp_operator, gw.tenant, gw.dataset, gw.image, lifetime=lifetime
    )
    before = _read(kubectl, gw, namespace)
    assert before["status"] == 200, before
    assert before["sha256"] == gw.digest
    bound = GatewaySettings.model_fields["grant_cache_seconds"].default
    wait_for(
        lambda: dt.datetime.now(dt.UTC) >= ends + dt.timedelta(seconds=bound),
        120,
        "the sandbox's end plus the documented bound",
    )
    after = _read(kubectl, gw, namespace)
    assert after["status"] in (0, 403), after
    if after["status"] == 403:
        assert "SandboxExpired" in after["body"] or "NotASandbox" in after["body"], after
