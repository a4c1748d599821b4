"""The real audit service goes down under a running gateway: reads fail closed, then recover.

Both are real processes, as the chart runs them: ``sandboxctl gateway serve`` (as its
least-privilege ServiceAccount, reading MinIO) appends to ``sandboxctl audit serve`` over
HTTP with a writer token. The audit service is killed (SIGKILL, as a crash or an evicted
pod), frozen (SIGSTOP, as a hung node: connections are accepted, nothing answers), and
brought back on the same address. While it is away every dataset request is a 503 with
no byte of data; once it is back reads succeed again without restarting the gateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client

from sandbox.artifacts.outbox import outbox_key, outbox_prefix
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.minio import MinioServer
from sandbox.devenv.processes import free_port
from sandbox.gateway.rbac import GATEWAY_NAME
from sandbox.provision.names import sandbox_id
from tests.real_audit import RealAuditService
from tests.servers import stop_process, wait_healthy

from .conftest import BIG, CHUNK, SYSTEM_NS, World, sha256

pytestmark = [pytest.mark.integration, pytest.mark.s3]

OUTBOX = "gw-outage-outbox"
AUDIT_TIMEOUT = 2.0
"""The gateway's audit timeout here (seconds): how long a frozen service may hold a read."""


@pytest.fixture(scope="module")
def audit_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealAuditService]:
    service = RealAuditService(
        tmp_path_factory.mktemp("gw-real-audit"),
        "audit.regsandbox.test/gateway-outage",
        f"system:serviceaccount:{SYSTEM_NS}:{GATEWAY_NAME}",
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def gateway_process(
    audit_service: RealAuditService,
    gateway_api: client.ApiClient,
    control_plane: ControlPlane,
    s3: MinioServer,
    world: World,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """``sandboxctl gateway serve`` against the real audit service; its base URL."""
    kubeconfig = control_plane.directory / "users" / "gateway-sa.kubeconfig"  # gateway_api's
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    output = tmp_path_factory.mktemp("gw-process") / "gateway.log"
    env = {
        "REGSANDBOX_GATEWAY_AUDIT_TOKEN_FILE": str(audit_service.token_file),
        "REGSANDBOX_GATEWAY_AUDIT_TIMEOUT": str(AUDIT_TIMEOUT),
        "REGSANDBOX_GATEWAY_S3_ACCESS_KEY_ID": s3.access_key,
        "REGSANDBOX_GATEWAY_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "REGSANDBOX_GATEWAY_S3_ENDPOINTS": json.dumps([s3.endpoint]),
        "REGSANDBOX_GATEWAY_CHUNK_BYTES": str(CHUNK),
        "REGSANDBOX_GATEWAY_OUTBOX_BUCKET": OUTBOX,
        "REGSANDBOX_GATEWAY_OUTBOX_ENDPOINT": s3.endpoint,
    }
    with contextlib.suppress(s3.client().exceptions.BucketAlreadyOwnedByYou):
        s3.client().create_bucket(Bucket=OUTBOX)
    args = [
        *(sys.executable, "-m", "sandbox.cli", "gateway", "serve"),
        *("--listen", f"127.0.0.1:{port}", "--kubeconfig", str(kubeconfig)),
        *("--audit-url", audit_service.url),
    ]
    base = {k: v for k, v in os.environ.items() if not k.startswith("REGSANDBOX_")}
    with output.open("wb") as out:
        proc = subprocess.Popen(
            args, env={**base, **env}, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        wait_healthy(proc, f"{url}/healthz", output)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def audit_back(audit_service: RealAuditService) -> Iterator[RealAuditService]:
    """The audit service, running again after the test whatever the test did to it."""
    try:
        yield audit_service
    finally:
        if audit_service.proc is not None and audit_service.proc.poll() is None:
            audit_service.thaw()
        if not audit_service.healthy():
            audit_service.kill()
            audit_service.start()


def _auth(world: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {world.token('alpha')}"}


def _until_read(url: str, headers: dict[str, str], timeout: float = 30.0) -> httpx.Response:
    """Poll a read until it is answered 200 (the gateway has found the log again)."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url, headers=headers, timeout=30)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.1)


def _refused_without_data(response: httpx.Response, *secrets: bytes) -> dict[str, Any]:
    """A 503 whose body is the JSON refusal and carries no byte of the objects."""
    assert response.status_code == 503, (response.status_code, response.content[:200])
    assert response.headers["content-type"].startswith("application/json")
    assert "content-range" not in response.headers
    for data in secrets:
        assert data[:64] not in response.content
    assert len(response.content) < 2048
    body: dict[str, Any] = response.json()
    assert body["reason"] == "AuditUnavailable", body
    return body


def test_a_killed_audit_service_means_503_and_no_byte_then_reads_recover(
    gateway_process: str, audit_back: RealAuditService, world: World
) -> None:
    base = f"{gateway_process}/v1/datasets/{world.claims}/objects"
    small, big = world.objects["small.csv"], world.objects["big.bin"]
    before = _until_read(f"{base}/small.csv", _auth(world))
    assert before.status_code == 200
    assert before.content == small

    audit_back.kill()
    headers = _auth(world)
    refused = [
        httpx.get(f"{base}/small.csv", headers=headers, timeout=30),
        httpx.get(f"{base}/big.bin", headers=headers, timeout=30),
        httpx.get(f"{base}/big.bin", headers={**headers, "Range": "bytes=100-199"}, timeout=30),
        httpx.get(base, headers=headers, timeout=30),
        # A refusal must be logged before it is answered: with no log it is a 503 too.
        httpx.get(f"{gateway_process}/v1/datasets/{world.other}/objects/x.txt", headers=headers),
    ]
    for response in refused:
        _refused_without_data(response, small, big, big[100:200], b"small.csv", b"other dataset")
    head = httpx.head(f"{base}/big.bin", headers=headers, timeout=30)
    assert head.status_code == 503
    assert head.headers.get("content-length") != str(BIG)

    audit_back.start()
    after = _until_read(f"{base}/small.csv", _auth(world))
    assert after.status_code == 200
    assert after.content == small
    full = httpx.get(f"{base}/big.bin", headers=_auth(world), timeout=60)
    assert full.status_code == 200
    assert full.content == big
    # Each read after the outage is on record (the large one as started and completed),
    # and no request of the outage is: none of them was answered with data.
    # (A checkpoint follows an append within a second: poll for the last record.)
    ids = {r.headers["x-request-id"] for r in (before, after, full)}
    deadline = time.monotonic() + 30
    while True:
        entries = audit_back.entries()
        logged = {e.request_id for e in entries}
        completed = [e for e in entries if e.request_id == full.headers["x-request-id"]]
        if (ids <= logged and len(completed) == 2) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert ids <= logged
    assert [e.details.get("phase") for e in completed] == ["started", "completed"], completed
    assert completed[-1].details["sha256"] == sha256(big)
    outage = {r.headers["x-request-id"] for r in [*refused, head]}
    assert not outage & logged


def test_a_frozen_audit_service_is_a_503_within_the_audit_timeout(
    gateway_process: str, audit_back: RealAuditService, world: World
) -> None:
    url = f"{gateway_process}/v1/datasets/{world.claims}/objects/small.csv"
    assert _until_read(url, _auth(world)).status_code == 200
    audit_back.freeze()
    started = time.monotonic()
    response = httpx.get(url, headers=_auth(world), timeout=30)
    waited = time.monotonic() - started
    _refused_without_data(response, world.objects["small.csv"])
    assert waited < 30  # answered by the gateway's own timeout, not the client's
    audit_back.thaw()
    recovered = _until_read(url, _auth(world))
    assert recovered.status_code == 200
    assert recovered.content == world.objects["small.csv"]


def test_a_service_killed_mid_stream_cuts_the_read_short(
    gateway_process: str, audit_back: RealAuditService, world: World
) -> None:
    url = f"{gateway_process}/v1/datasets/{world.claims}/objects/big.bin"
    assert _until_read(url, _auth(world)).status_code == 200
    received = 0
    with httpx.stream("GET", url, headers=_auth(world), timeout=30) as response:
        assert response.status_code == 200
        assert int(response.headers["content-length"]) == BIG
        chunks = response.iter_bytes()
        received += len(next(chunks))  # the "started" record is on the log by now
        audit_back.kill()
        with pytest.raises(httpx.HTTPError) as cut:  # noqa: PT012 - cut while reading
            for chunk in chunks:
                received += len(chunk)
    # The completion record could not be written: the last chunk was never sent, so the
    # client can tell the response is incomplete and no complete read goes unlogged.
    assert isinstance(cut.value, httpx.RemoteProtocolError), repr(cut.value)
    assert 0 < received < BIG


def test_an_artifact_written_while_the_service_is_down_is_refused_and_not_kept(
    gateway_process: str, audit_back: RealAuditService, world: World, s3: MinioServer
) -> None:
    path = f"outage/model-{secrets.token_hex(4)}.onnx"
    url = f"{gateway_process}/v1/outbox/{path}"
    data = secrets.token_bytes(3 * 1024 * 1024)
    prefix = outbox_prefix(sandbox_id(world.tenant, "alpha"))
    store = s3.client()

    def kept() -> list[str]:
        listing = store.list_objects_v2(Bucket=OUTBOX, Prefix=prefix + "outage/")
        uploads = store.list_multipart_uploads(Bucket=OUTBOX, Prefix=prefix)
        return [o["Key"] for o in listing.get("Contents", [])] + [
            u["Key"] for u in uploads.get("Uploads", [])
        ]

    assert (
        _until_read(
            f"{gateway_process}/v1/datasets/{world.claims}/objects/small.csv", _auth(world)
        ).status_code
        == 200
    )
    audit_back.kill()
    refused = httpx.put(url, content=data, headers=_auth(world), timeout=60)
    _refused_without_data(refused)
    assert kept() == [], "an artifact is in the outbox without its record"

    audit_back.start()
    written = httpx.put(url, content=data, headers=_auth(world), timeout=60)
    assert written.status_code == 201, written.text
    key = outbox_key(sandbox_id(world.tenant, "alpha"), path)
    assert store.get_object(Bucket=OUTBOX, Key=key)["Body"].read() == data
    request_id = written.headers["x-request-id"]
    deadline = time.monotonic() + 30
    while not (logged := [e for e in audit_back.entries() if e.request_id == request_id]):
        assert time.monotonic() < deadline, "the write is not on record"
        time.sleep(0.1)
    assert logged[0].action == "model.artifact.written"
    assert logged[0].details["sha256"] == sha256(data)
    outage = refused.headers["x-request-id"]
    assert not [e for e in audit_back.entries() if e.request_id == outage]
