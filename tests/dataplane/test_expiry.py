"""A sandbox that ends while its pod is reading: the reads stop at ``expiresAt``.

The documented bound (docs/tenants.md, "The end of a sandbox"): the gateway compares every
request with the Sandbox's ``status.expiresAt``, so from that instant on no read of a
running pod is served — bound zero, whatever the caches; within one resync interval the
operator then also cuts the namespace's network (``onExpiry: retain``) or deletes the
namespace with its pods (``onExpiry: delete``, the default).

A pod runs a read loop across the end: each read records when it was sent (the pod's
clock is the node's, which is the gateway's) and how many dataset bytes it received.
Every read sent at or after ``expiresAt`` must receive none. The operator runs with a
one-second resync (``dp_operator``), the gateway with the default one-second grant cache
and no TokenReview cache.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.images import image_ref, import_images
from sandbox.devenv.minio import MinioServer
from sandbox.devenv.operator_process import OperatorProcess
from sandbox.devenv.tenancy import (
    add_tenant_with_dataset,
    dataset_granted,
    dataset_manifest,
    grant_sandbox,
)
from sandbox.gateway.rbac import GATEWAY_NAME
from sandbox.kube.apply import apply, delete, get
from sandbox.provision.names import sandbox_namespace
from sandbox.provision.sandbox_plan import IsolationSettings
from sandbox.testing import sandbox_manifest

from .pods import SYSTEM_NS, Kubectl, unique, wait_for, wait_running
from .stacks import audit_entries
from .test_gateway_reads import GATEWAY_UID, TOKEN_DIR, _gateway_objects, _workload

pytestmark = [pytest.mark.dataplane, pytest.mark.integration]

ORIGIN = "audit.regsandbox.test/dataplane-expiry"
BUCKET = "dp-expiry"
OBJECT = "part-0001.bin"
LIFETIME_SECONDS = 60
"""From the Sandbox's apply to its end: enough for the grant and a Running pod."""

ENDED = (
    "SandboxExpired",  # at expiresAt, before the operator has acted
    "SandboxNotReady",  # the operator has marked it Expired / ExpiredRetained
    "SandboxTerminating",
    "SandboxNotFound",
    "NotASandbox",  # its namespace is going
    "DatasetNotGranted",  # the teardown cleared its grants
)
"""Why the gateway may refuse a read of an ended sandbox, depending on how far the end is."""

LOOP = """
import hashlib, json, sys, time, urllib.error, urllib.request
url, token_file, until = sys.argv[1], sys.argv[2], float(sys.argv[3])
token = open(token_file).read().strip()
while True:
    row = {"sent": time.time(), "status": 0, "bytes": 0}
    request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            row["status"] = response.status
            digest = hashlib.sha256()
            while chunk := response.read(65536):
                row["bytes"] += len(chunk)
                digest.update(chunk)
            row["sha256"] = digest.hexdigest()
    except urllib.error.HTTPError as exc:
        row["status"] = exc.code
        row["body"] = exc.read().decode(errors="replace")[:300]
    except OSError as exc:  # no connection (network cut), or the body was cut off
        row["error"] = str(exc)[:300]
    print(json.dumps(row), flush=True)
    if row["sent"] > until:
        break
    time.sleep(0.25)
"""


@dataclass
class ExpiryWorld:
    tenant: str
    dataset: str
    digest: str
    size: int
    gateway_audit: Path
    url: str
    image: str


def _gateway_gone(api: client.ApiClient) -> bool:
    return get(api, "Pod", "gateway", SYSTEM_NS) is None


@pytest.fixture(scope="module")
def world(
    data_plane: ControlPlane,
    dp_api: client.ApiClient,
    dp_operator: OperatorProcess,
    dp_storage: MinioServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ExpiryWorld]:
    """The gateway pod (its own audit log), a dataset of one object, a tenant."""
    import_images(data_plane.node.layout.containerd_socket, ["regsandbox"])
    image = image_ref("regsandbox")
    # test_gateway_reads runs a gateway pod of the same name; wait until it is gone.
    wait_for(lambda: _gateway_gone(dp_api), 60, "an earlier gateway pod to be gone")
    audit_dir = tmp_path_factory.mktemp("dp-expiry-audit")
    signer = generate_key_file(audit_dir / "signing.key", ORIGIN)
    AuditLog.create(audit_dir / "log", ORIGIN, signer).close()
    for path in (audit_dir, *audit_dir.rglob("*")):
        os.chown(path, GATEWAY_UID, GATEWAY_UID)
    settings = IsolationSettings()
    for obj in _gateway_objects(image, audit_dir, dp_storage, settings):
        apply(dp_api, obj)
    wait_running(dp_api, SYSTEM_NS, "gateway", timeout=120)

    data = secrets.token_bytes(128 * 1024)
    s3 = dp_storage.client()
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=f"claims/{OBJECT}", Body=data)
    dataset, tenant = unique("claims"), unique("te")
    add_tenant_with_dataset(
        dp_api,
        dp_operator.wait_until,
        tenant=tenant,
        dataset=dataset_manifest(
            dataset, bucket=BUCKET, prefix="claims/", endpoint=dp_storage.endpoint
        ),
        what="tenant home namespace",
    )
    try:
        yield ExpiryWorld(
            tenant=tenant,
            dataset=dataset,
            digest=hashlib.sha256(data).hexdigest(),
            size=len(data),
            gateway_audit=audit_dir / "log",
            url=(
                f"http://{GATEWAY_NAME}.{SYSTEM_NS}.svc.cluster.local:{settings.gateway_port}"
                f"/v1/datasets/{dataset}/objects/{OBJECT}"
            ),
            image=image,
        )
    finally:
        delete(dp_api, "Tenant", tenant)
        delete(dp_api, "Dataset", dataset)
        delete(dp_api, "Pod", "gateway", SYSTEM_NS)
        wait_for(lambda: _gateway_gone(dp_api), 60, "the gateway pod to be gone")


@dataclass
class Ending:
    """A sandbox with a reading pod, and when it ends."""

    sandbox: str
    namespace: str
    ends: dt.datetime
    containers: list[str]


def _ending_sandbox(
    api: client.ApiClient, operator: OperatorProcess, world: ExpiryWorld, on_expiry: str
) -> Ending:
    sandbox = unique("sbx")
    ends = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=LIFETIME_SECONDS)
    namespace = grant_sandbox(
        api,
        operator.wait_until,
        tenant=world.tenant,
        sandbox=sandbox,
        dataset=world.dataset,
        timeout=90,
        what="the grant",
        lifetime={"expiresAt": ends.isoformat().replace("+00:00", "Z"), "onExpiry": on_expiry},
    )
    client.CoreV1Api(api).create_namespaced_pod(namespace, _workload(namespace, world.image))
    pod = wait_running(api, namespace, "trainer", timeout=120)
    left = (ends - dt.datetime.now(dt.UTC)).total_seconds()
    assert left > 3, f"the pod ran only {left:.1f} s before the end: too slow to test a read"
    ids = [s.container_id.split("://", 1)[-1] for s in pod.status.container_statuses or []]
    return Ending(sandbox, namespace, ends, ids)


def _loop_command(kubectl: Kubectl, world: ExpiryWorld, ending: Ending, until: float) -> list[str]:
    """``kubectl exec`` of the read loop in the pod, reading until ``until`` (epoch seconds)."""
    return [
        str(kubectl.binary),
        f"--kubeconfig={kubectl.kubeconfig}",
        "exec",
        "-n",
        ending.namespace,
        "trainer",
        "--",
        "python3",
        "-c",
        LOOP,
        world.url,
        f"{TOKEN_DIR}/token",
        str(until),
    ]


def _start_reading(kubectl: Kubectl, world: ExpiryWorld, ending: Ending, after: float) -> Any:
    """The read loop in the pod, until ``after`` seconds past the end (or the pod dies)."""
    until = ending.ends.timestamp() + after
    return subprocess.Popen(
        _loop_command(kubectl, world, ending, until),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rows(reader: Any, timeout: float) -> list[dict[str, Any]]:
    out, err = reader.communicate(timeout=timeout)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert rows, f"the read loop printed nothing (exit {reader.returncode}): {err!r}"
    return rows


def _check_reads(rows: list[dict[str, Any]], world: ExpiryWorld, ends: dt.datetime) -> None:
    """A full, correct read before the end; not one dataset byte in a read sent after it."""
    before = [r for r in rows if r["sent"] < ends.timestamp()]
    after = [r for r in rows if r["sent"] >= ends.timestamp()]
    assert any(
        r["status"] == 200 and r["bytes"] == world.size and r.get("sha256") == world.digest
        for r in before
    ), before[-5:]
    assert after, "no read was attempted after the end"
    served = [r for r in after if r["status"] == 200 or r["bytes"] > 0]
    assert not served, f"dataset bytes reached the pod after expiresAt: {served}"
    for row in after:
        if row["status"] == 403:  # reached the gateway: it refused, saying why
            assert any(reason in row["body"] for reason in ENDED), row
        else:  # no connection (network cut), or the token died with the namespace
            assert row["status"] in (0, 401), row


def _one_read(kubectl: Kubectl, world: ExpiryWorld, ending: Ending) -> dict[str, Any]:
    """One read from the pod (the loop, told to stop after its first read)."""
    result = subprocess.run(
        _loop_command(kubectl, world, ending, 0),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    row: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert row["bytes"] == 0 or row["sent"] < ending.ends.timestamp(), row
    return row


def _refusals_named(world: ExpiryWorld, ending: Ending) -> list[dict[str, Any]]:
    return [
        e
        for e in audit_entries(world.gateway_audit)
        if e["action"] == "dataset.read"
        and e["actor"].get("pod") == f"{ending.namespace}/trainer"
        and e["outcome"] == "denied"
    ]


def _no_running_task(data_plane: ControlPlane, container_ids: list[str]) -> bool:
    """Whether none of the pod's containers still has a task on the node's containerd."""
    listed = subprocess.run(
        [
            "ctr",
            "--address",
            str(data_plane.node.layout.containerd_socket),
            "-n",
            "k8s.io",
            "tasks",
            "ls",
        ],
        capture_output=True,
        text=True,
        timeout=15,
        check=True,
    )
    running = {
        line.split()[0]
        for line in listed.stdout.splitlines()[1:]
        if line.split() and line.split()[-1] == "RUNNING"
    }
    return not running.intersection(container_ids)


def _gone(api: client.ApiClient, ending: Ending) -> bool:
    return (
        get(api, "Namespace", ending.namespace) is None
        and get(api, "Pod", "trainer", ending.namespace) is None
    )


def test_expiry_with_delete_stops_reads_at_the_end_and_takes_the_pods_with_the_namespace(
    data_plane: ControlPlane,
    dp_api: client.ApiClient,
    dp_operator: OperatorProcess,
    dp_audit: tuple[Path, Path],
    kubectl: Kubectl,
    world: ExpiryWorld,
) -> None:
    ending = _ending_sandbox(dp_api, dp_operator, world, "delete")
    assert ending.containers, "the pod reported no container"
    reader = _start_reading(kubectl, world, ending, after=20)
    try:
        wait_for(lambda: _gone(dp_api, ending), LIFETIME_SECONDS + 90, "the namespace to go")
        rows = _rows(reader, timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    _check_reads(rows, world, ending.ends)
    # The pod went with the namespace: no container of it is left running on the node.
    wait_for(
        lambda: _no_running_task(data_plane, ending.containers), 60, "the pod's containers to stop"
    )
    # The operator's audit log records the end: the expiry and the destroyed key.
    log, _ = dp_audit
    ended = wait_for(
        lambda: [
            e
            for e in audit_entries(log)
            if e["resource"].get("name") == ending.sandbox
            and e["action"] in ("sandbox.expired", "key.destroyed")
        ],
        30,
        "the expiry's audit entries",
    )
    assert {e["action"] for e in ended} == {"sandbox.expired", "key.destroyed"}, ended
    expired = next(e for e in ended if e["action"] == "sandbox.expired")
    assert expired["details"]["namespace"] == ending.namespace
    # Every read the gateway saw after the end is in its log as refused, naming the pod.
    refused_rows = [r for r in rows if r["status"] == 403]
    if refused_rows:
        # The gateway's log covers them once its next checkpoint is signed: wait for all.
        refusals = wait_for(
            lambda: (
                (found := _refusals_named(world, ending))
                and len(found) >= len(refused_rows)
                and found
            ),
            30,
            f"the {len(refused_rows)} refused reads' audit entries",
        )
        assert len(refusals) >= len(refused_rows)


def test_expiry_with_retain_refuses_reads_at_the_end_then_cuts_the_network(
    data_plane: ControlPlane,
    dp_api: client.ApiClient,
    dp_operator: OperatorProcess,
    kubectl: Kubectl,
    world: ExpiryWorld,
) -> None:
    ending = _ending_sandbox(dp_api, dp_operator, world, "retain")
    reader = _start_reading(kubectl, world, ending, after=15)
    try:
        wait_for(
            lambda: get(dp_api, "NetworkPolicy", "quarantine", ending.namespace),
            LIFETIME_SECONDS + 60,
            "the operator to quarantine the expired sandbox",
        )
        rows = _rows(reader, timeout=LIFETIME_SECONDS + 60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    _check_reads(rows, world, ending.ends)
    # What reached the gateway after the end was refused, and each refusal is logged
    # naming the pod (the operator writes no entry for a retained expiry: see the report).
    expired_rows = [r for r in rows if r["status"] == 403 and "SandboxExpired" in r["body"]]
    if expired_rows:
        refusals = wait_for(
            lambda: _refusals_named(world, ending), 30, "the refused reads' audit entries"
        )
        reasons = [e["details"].get("reason") for e in refusals]
        assert reasons.count("SandboxExpired") >= len(expired_rows), refusals
    # Then the network cut holds: a read no longer reaches the gateway at all.
    wait_for(
        lambda: _one_read(kubectl, world, ending)["status"] == 0, 60, "the network cut to bite"
    )
    # Deleting the retained sandbox takes the namespace and its pod.
    delete(dp_api, "Sandbox", ending.sandbox, f"tenant-{world.tenant}")
    wait_for(lambda: _gone(dp_api, ending), 90, "the namespace and its pod to go")
    wait_for(
        lambda: _no_running_task(data_plane, ending.containers), 60, "the pod's containers to stop"
    )


class MissingAuditEntryError(AssertionError):
    """The operator's log has no entry for a sandbox's end."""


def test_a_retained_expiry_is_in_the_operators_audit_log(
    dp_api: client.ApiClient,
    dp_operator: OperatorProcess,
    dp_audit: tuple[Path, Path],
    world: ExpiryWorld,
) -> None:
    """The end of a retained sandbox (its network cut, its grants no longer in force) is
    an event an auditor must find in the log, as the end of a deleted one is."""
    sandbox = unique("sbx")
    ends = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=30)
    apply(
        dp_api,
        sandbox_manifest(
            sandbox,
            world.tenant,
            resources={"cpu": "1", "memory": "1Gi", "storage": "1Gi"},
            datasets=[{"name": world.dataset, "purpose": "fraud-detection"}],
            lifetime={"expiresAt": ends.isoformat().replace("+00:00", "Z"), "onExpiry": "retain"},
        ),
    )
    namespace = sandbox_namespace(world.tenant, sandbox)
    try:
        dp_operator.wait_until(
            lambda: dataset_granted(dp_api, world.tenant, sandbox, world.dataset), 90, "the grant"
        )
        if dt.datetime.now(dt.UTC) >= ends:
            pytest.fail("provisioned only after its end: too slow to test")
        wait_for(
            lambda: get(dp_api, "NetworkPolicy", "quarantine", namespace),
            90,
            "the operator to quarantine the expired sandbox",
        )
        log, _ = dp_audit
        try:
            wait_for(
                lambda: [
                    e
                    for e in audit_entries(log)
                    if e["resource"].get("name") == sandbox
                    and e["action"] in ("sandbox.expired", "sandbox.quarantined")
                ],
                15,
                "an audit entry for the retained sandbox's end",
            )
        except TimeoutError as exc:
            raise MissingAuditEntryError(str(exc)) from None
    finally:
        delete(dp_api, "Sandbox", sandbox, f"tenant-{world.tenant}")
