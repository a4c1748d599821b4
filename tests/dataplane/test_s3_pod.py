"""Issue 20 from a real pod: boto3 and s3fs, configured only by the sandbox's ConfigMap.

The chart on a node (the operator, two gateways and the audit service in pods, from the
locally built image), MinIO with a dataset, a sandbox granted it. The pod has nothing of
its own but the two things docs/tenants.md tells a tenant to add: ``envFrom`` the
``regsandbox-s3`` ConfigMap the operator wrote, and the projected token volume (audience
``regsandbox-gateway``). In it, boto3 and s3fs with their default settings exchange the
token for S3 credentials at the gateway's STS, list and read the dataset and write into
the outbox; the audit service's log has each read with that pod and the SHA-256 of the
bytes, and each write with the SHA-256 of the object as stored.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.chart import APP_UID
from sandbox.devenv.chartstack import ChartStack
from sandbox.devenv.images import WORKLOAD_PYTHON
from sandbox.devenv.stack import OUTBOX_BUCKET
from sandbox.devenv.toolchain import tool_path
from sandbox.devenv.workload import workload_pod
from sandbox.kube.apply import get
from sandbox.provision.names import sandbox_id
from sandbox.provision.s3_client_env import S3_CLIENT_CONFIGMAP

from .pods import Kubectl, unique, wait_for, wait_running
from .stacks import audit_entries, chart_stack, granted_sandbox, require_data_plane

pytestmark = pytest.mark.dataplane

NAMESPACE = "regsandbox-system"

# Runs in the pod with the image's workload venv; no endpoint, key or setting in code.
CLIENTS = """
import hashlib, json, sys, time
started = time.monotonic()
def step(what):
    print(f"{time.monotonic() - started:.1f}s {what}", file=sys.stderr, flush=True)
import boto3, s3fs
step("imported")
dataset, run = sys.argv[1:3]
c = boto3.client("s3")
buckets = [b["Name"] for b in c.list_buckets()["Buckets"]]
step("listed buckets")
keys = [o["Key"] for o in c.list_objects_v2(Bucket=dataset)["Contents"]]
first = c.get_object(Bucket=dataset, Key="part-0001.bin")["Body"].read()
ranged = c.get_object(Bucket=dataset, Key="part-0001.bin", Range="bytes=0-1023")["Body"].read()
c.put_object(Bucket="outbox", Key=run + "/boto3.bin", Body=b"weights from boto3")
step("boto3 done")
fs = s3fs.S3FileSystem()
listed = sorted(p.rsplit("/", 1)[1] for p in fs.ls(dataset))
with fs.open(dataset + "/part-0002.bin", "rb") as handle:
    second = handle.read()
with fs.open("outbox/" + run + "/s3fs.bin", "wb") as handle:
    handle.write(b"weights from s3fs")
step("s3fs done")
print(json.dumps({
    "buckets": buckets, "keys": keys, "listed": listed,
    "first": hashlib.sha256(first).hexdigest(), "ranged": hashlib.sha256(ranged).hexdigest(),
    "second": hashlib.sha256(second).hexdigest(),
}))
"""


@pytest.fixture(scope="module")
def stack(repo_root: Path) -> Iterator[ChartStack]:
    require_data_plane()
    with chart_stack(repo_root, "regsandbox-s3-dp-") as running:
        yield running


def _granted_sandbox(stack: ChartStack, dataset: str) -> tuple[str, str, str]:
    tenant, sandbox = unique("ts3"), unique("sbx")
    namespace = granted_sandbox(
        stack, bucket="s3-pod-datasets", dataset=dataset, tenant=tenant, sandbox=sandbox
    )
    return tenant, sandbox, namespace


def test_a_pod_with_only_the_configmap_and_its_token_reads_and_writes_over_s3(
    stack: ChartStack,
) -> None:
    api = stack.admin
    kubectl = Kubectl(tool_path("kubectl"), stack.plane.admin_kubeconfig)
    objects = {name: secrets.token_bytes(256 * 1024) for name in ("part-0001.bin", "part-0002.bin")}
    store = stack.minio.client()
    store.create_bucket(Bucket="s3-pod-datasets")
    for name, data in objects.items():
        store.put_object(Bucket="s3-pod-datasets", Key=f"claims/{name}", Body=data)
    dataset = unique("claims")
    tenant, sandbox, namespace = _granted_sandbox(stack, dataset)

    # The operator wrote the SDK environment into the sandbox namespace.
    configmap = wait_for(
        lambda: get(api, "ConfigMap", S3_CLIENT_CONFIGMAP, namespace), 60, "the ConfigMap"
    )
    assert configmap["data"]["AWS_ENDPOINT_URL"].startswith("http://regsandbox-gateway.")
    assert "AWS_REQUEST_CHECKSUM_CALCULATION" not in configmap["data"]

    # The documented pod: the workload pod (projected token) plus one envFrom line.
    resources = {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    body = workload_pod("s3-client", namespace, stack.image, APP_UID, resources=resources)
    body["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": S3_CLIENT_CONFIGMAP}}]
    client.CoreV1Api(api).create_namespaced_pod(namespace, body)
    wait_running(api, namespace, "s3-client", timeout=120)

    run = unique("run")
    ran = kubectl.run(
        "exec",
        "-n",
        namespace,
        "s3-client",
        "--",
        WORKLOAD_PYTHON,
        "-c",
        CLIENTS,
        dataset,
        run,
        timeout=240,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["buckets"] == [dataset, "outbox"]
    assert seen["keys"] == ["part-0001.bin", "part-0002.bin"]
    assert seen["listed"] == ["part-0001.bin", "part-0002.bin"]
    first, second = objects["part-0001.bin"], objects["part-0002.bin"]
    assert seen["first"] == hashlib.sha256(first).hexdigest()
    assert seen["ranged"] == hashlib.sha256(first[:1024]).hexdigest()
    assert seen["second"] == hashlib.sha256(second).hexdigest()

    # The written models are in the outbox, under this sandbox's prefix.
    prefix = f"{sandbox_id(tenant, sandbox)}/outbox/{run}/"
    for name, data in (("boto3.bin", b"weights from boto3"), ("s3fs.bin", b"weights from s3fs")):
        stored = store.get_object(Bucket=OUTBOX_BUCKET, Key=prefix + name)["Body"].read()
        assert stored == data

    # The audit service's log: the credentials, each read and write, with the pod.
    pod = f"{namespace}/s3-client"
    log = stack.audit_log

    def mine() -> list[dict[str, Any]]:
        entries = [e for e in audit_entries(log) if e["actor"].get("pod") == pod]
        written = [e for e in entries if e["action"] == "model.artifact.written"]
        return entries if len(written) >= 2 else []

    entries = wait_for(mine, 30, "the pod's audit entries")
    assert {e["action"] for e in entries} >= {
        "credentials.issued",
        "dataset.list",
        "dataset.read",
        "model.artifact.written",
    }
    reads = {
        (e["details"]["key"], e["details"].get("range"), e["details"]["sha256"])
        for e in entries
        if e["action"] == "dataset.read" and "sha256" in e["details"]
    }
    assert ("part-0001.bin", None, hashlib.sha256(first).hexdigest()) in reads
    assert ("part-0001.bin", "bytes=0-1023", hashlib.sha256(first[:1024]).hexdigest()) in reads
    assert any(
        k == "part-0002.bin" and h == hashlib.sha256(second).hexdigest() for k, _, h in reads
    )
    commits = {
        e["resource"]["name"]: e["details"]["sha256"]
        for e in entries
        if e["action"] == "model.artifact.written" and e["details"].get("phase") == "commit"
    }
    assert commits == {
        f"{run}/boto3.bin": hashlib.sha256(b"weights from boto3").hexdigest(),
        f"{run}/s3fs.bin": hashlib.sha256(b"weights from s3fs").hexdigest(),
    }
    assert all(e["outcome"] == "success" for e in entries), [
        (e["action"], e["outcome"], e["details"].get("reason")) for e in entries
    ]
