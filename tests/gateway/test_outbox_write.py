"""The outbox write path: a workload stores its model where the airlock finds it.

``PUT /v1/outbox/<path>`` with the pod's projected token writes into the outbox of the
token's own sandbox, nowhere else; it is audited (with pod, sandbox, key, bytes and
SHA-256) before the object exists, never replaces an object, and keeps nothing of a
refused or failed write. Against the session's control plane, MinIO and audit log; the
airlock itself (``reconcile_export``) then finds the artifact with the same digest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.client
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from kubernetes import client
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from audit.entry import Entry
from sandbox.artifacts.outbox import ArtifactStore, OutboxSettings, outbox_key
from sandbox.devenv.minio import MinioServer
from sandbox.devenv.toolchain import tool_path
from sandbox.errors import ConfigurationError
from sandbox.gateway import AUDIENCE, Gateway, GrantResolver, Storage, TokenReviewer, create_app
from sandbox.gateway.build import outbox_writer
from sandbox.gateway.outbox import OutboxWriter
from sandbox.gateway.settings import GatewaySettings
from sandbox.kube.apply import apply, delete
from sandbox.provision.names import (
    LABEL_SANDBOX,
    LABEL_TENANT,
    sandbox_id,
    sandbox_namespace,
    tenant_namespace,
)
from sandbox.testing import sandbox_manifest
from tests.servers import serve_app

from .conftest import SwitchableSink, World, pod_token, set_sandbox_status, sha256

pytestmark = [pytest.mark.integration, pytest.mark.s3]

OUTBOX = "gw-outbox"
RELEASED = "gw-released"
PART = 5 * 1024 * 1024  # the smallest part S3 allows: multipart bodies stay small
LIMIT = 12 * 1024 * 1024
HOLD = "regsandbox.io/test-hold"


class RacyOutbox(OutboxWriter):
    """An outbox writer whose early existence check can be switched off, to play the
    race where another write commits between the check and this one's commit."""

    skip_check = False

    def exists(self, key: str) -> bool:
        return False if self.skip_check else super().exists(key)


@dataclass
class Lab:
    """A tenant of its own (with a Tenant object, for the airlock) and its sandboxes."""

    tenant: str
    tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def key(self, sandbox: str, path: str) -> str:
        return outbox_key(sandbox_id(self.tenant, sandbox), path)


def _sandbox_with_pod(
    admin: client.ApiClient, tenant: str, name: str, *, finalizer: bool = False
) -> str:
    """A labelled sandbox namespace, its Sandbox (Ready), a pod and that pod's token."""
    ns = sandbox_namespace(tenant, name)
    apply(
        admin,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": ns, "labels": {LABEL_TENANT: tenant, LABEL_SANDBOX: name}},
        },
    )
    body = sandbox_manifest(name, tenant, lifetime={"ttl": "1h"})
    if finalizer:
        body["metadata"]["finalizers"] = [HOLD]
    apply(admin, body)
    set_sandbox_status(admin, tenant, name)
    apply(
        admin,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "workload", "namespace": ns},
        },
    )
    client.CoreV1Api(admin).create_namespaced_pod(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "train-0"},
            "spec": {
                "serviceAccountName": "workload",
                "containers": [{"name": "main", "image": "registry.invalid/train:1"}],
            },
        },
    )
    return pod_token(admin, ns, "train-0")


@pytest.fixture(scope="module")
def lab(admin_api: client.ApiClient, world: World) -> Iterator[Lab]:
    """A health tenant (one reviewer releases) with sandboxes ``lab``, ``doomed``
    (being deleted, held by a finalizer), ``quarantined`` (Ready=False, NonCompliant)
    and ``brief`` (for a test that lets it expire)."""
    tenant = f"{world.tenant}w"
    apply(
        admin_api,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {
                "organisation": "Outbox hospital",
                "sector": "health",
                "jurisdiction": "LU",
                "members": [
                    {"user": "alice", "role": "member"},
                    {"user": "bob", "role": "reviewer"},
                ],
            },
        },
    )
    apply(
        admin_api,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": tenant_namespace(tenant)}},
    )
    lab = Lab(tenant)
    for name in ("lab", "doomed", "quarantined", "brief"):
        lab.tokens[name] = _sandbox_with_pod(admin_api, tenant, name, finalizer=name == "doomed")
    delete(admin_api, "Sandbox", "doomed", tenant_namespace(tenant))  # held: deletionTimestamp
    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    admin_api.call_api(
        f"/apis/regsandbox.io/v1alpha1/namespaces/{tenant_namespace(tenant)}/sandboxes/quarantined/status",
        "PATCH",
        header_params={"Content-Type": "application/merge-patch+json"},
        body={
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "NonCompliant",
                        "message": "quarantined: a policy changed",
                        "observedGeneration": 1,
                        "lastTransitionTime": now,
                    }
                ]
            }
        },
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )
    try:
        yield lab
    finally:
        client.CustomObjectsApi(admin_api).patch_namespaced_custom_object(
            "regsandbox.io",
            "v1alpha1",
            tenant_namespace(tenant),
            "sandboxes",
            "doomed",
            {"metadata": {"finalizers": None}},
        )
        delete(admin_api, "Tenant", tenant)


@pytest.fixture(scope="module")
def outbox(s3: MinioServer) -> RacyOutbox:
    """The outbox writer as ``build_gateway`` makes it from settings, on the real MinIO."""
    store = s3.client()
    for bucket in (OUTBOX, RELEASED):
        with contextlib.suppress(store.exceptions.BucketAlreadyOwnedByYou):
            store.create_bucket(Bucket=bucket)
    settings = GatewaySettings.load(
        audit_log_dir=Path("/nonexistent"),
        s3_access_key_id=s3.access_key,
        s3_secret_access_key=s3.secret_key,
        outbox_bucket=OUTBOX,
        outbox_endpoint=s3.endpoint,
        outbox_max_bytes=LIMIT,
        outbox_part_bytes=PART,
    )
    built = outbox_writer(settings)
    assert built is not None
    return RacyOutbox(built.s3, OUTBOX, max_bytes=built.max_bytes, part_bytes=built.part_bytes)


@pytest.fixture(scope="module")
def writer(
    gateway_api: client.ApiClient,
    s3: MinioServer,
    audit_sink: SwitchableSink,
    outbox: RacyOutbox,
) -> Gateway:
    """A gateway with an outbox."""
    return Gateway(
        reviewer=TokenReviewer(gateway_api, AUDIENCE, cache_seconds=10.0),
        grants=GrantResolver(gateway_api, cache_seconds=0.0),
        storage=Storage(
            SecretStr(s3.access_key), SecretStr(s3.secret_key), allowed_endpoints=[s3.endpoint]
        ),
        audit=audit_sink,
        outbox=outbox,
    )


@pytest.fixture(scope="module")
def writer_url(writer: Gateway) -> Iterator[str]:
    """That gateway, served on a free 127.0.0.1 port."""
    with serve_app(create_app(writer), what="the gateway") as url:
        yield url


def _put(url: str, path: str, token: str | None, body: Any, **headers: str) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.put(
        f"{url}/v1/outbox/{path}", content=body, headers={**auth, **headers}, timeout=60
    )


def _raw_put(url: str, path: str, token: str, body: bytes = b"model") -> tuple[int, bytes]:
    """PUT ``path`` exactly as written (no client-side normalisation of dots or escapes)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.putrequest("PUT", path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _object(s3: MinioServer, key: str) -> bytes | None:
    store = s3.client()
    try:
        return store.get_object(Bucket=OUTBOX, Key=key)["Body"].read()
    except store.exceptions.NoSuchKey:
        return None


def _keys(s3: MinioServer, prefix: str = "") -> list[str]:
    listing = s3.client().list_objects_v2(Bucket=OUTBOX, Prefix=prefix)
    return [str(o["Key"]) for o in listing.get("Contents", [])]


def _unfinished(s3: MinioServer, key: str) -> list[str]:
    """Unfinished multipart uploads of ``key`` (MinIO lists them by exact key only)."""
    listing = s3.client().list_multipart_uploads(Bucket=OUTBOX, Prefix=key)
    return [str(u["Key"]) for u in listing.get("Uploads", [])]


def _refusal(sink: SwitchableSink, start: int, reason: str) -> Entry:
    (entry,) = sink.entries_since(start)
    assert entry.action == "model.artifact.written"
    assert entry.resource.kind == "ModelArtifact"
    assert entry.details["phase"] == "refused"
    assert entry.details["reason"] == reason
    assert entry.outcome in ("denied", "failure")
    return entry


# -- the story: write, then export ----------------------------------------------------


def test_a_written_artifact_is_what_the_airlock_checks_and_releases(
    writer_url: str,
    lab: Lab,
    s3: MinioServer,
    admin_api: client.ApiClient,
    user_api: Callable[..., client.ApiClient],
    audit_sink: SwitchableSink,
) -> None:
    from sandbox.lifecycle.exports import reconcile_export
    from sandbox.lifecycle.platform import Platform
    from sandbox.policy.embedded import EmbeddedEngine
    from sandbox.policy.policyset import DEFAULT_POLICY_DIR, PolicySet

    model = os.urandom(LIMIT - PART)  # 7 MiB: two parts
    start = audit_sink.size
    r = _put(writer_url, "fraud/detector.onnx", lab.tokens["lab"], model)
    assert r.status_code == 201, r.text
    written = r.json()
    assert written["sha256"] == sha256(model)
    assert written["size"] == len(model)
    assert written["sandbox"] == "lab"
    key = lab.key("lab", "fraud/detector.onnx")
    assert written["source"] == f"s3://{OUTBOX}/{key}"
    assert _object(s3, key) == model

    # A tenant member asks for it; the airlock (the operator's own code) looks it up.
    ns = tenant_namespace(lab.tenant)
    objects = client.CustomObjectsApi(user_api("alice", "system:masters"))
    export = objects.create_namespaced_custom_object(
        "regsandbox.io",
        "v1alpha1",
        ns,
        "modelexports",
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "ModelExport",
            "metadata": {"name": "detector-v1"},
            "spec": {
                "sandbox": "lab",
                "artifact": {"path": "fraud/detector.onnx", "type": "model"},
                "destination": {"bucket": RELEASED, "prefix": "v1/", "region": "aws:eu-central-1"},
                "justification": "the model for the hospital's triage service",
                "requestedBy": "alice",
            },
        },
    )
    store = ArtifactStore(
        OutboxSettings.model_validate(
            {
                "bucket": OUTBOX,
                "endpoint": s3.endpoint,
                "access_key_id": s3.access_key,
                "secret_access_key": s3.secret_key,
                "destinations": {RELEASED: {"region": "aws:eu-central-1"}},
            }
        )
    )
    platform = Platform(
        api=admin_api,
        engine=EmbeddedEngine(PolicySet.from_directory(DEFAULT_POLICY_DIR)),
        audit=audit_sink,
        keys=SimpleNamespace(name="local"),
        storage=None,  # type: ignore[arg-type]  # an export touches no volume
        cluster_region="onprem:lu-national-1",
        cluster_jurisdiction="LU",
    )

    def reconcile_until(condition: str) -> dict[str, Any]:
        body = dict(export)
        for _ in range(10):
            result = reconcile_export(platform, store, body)
            body["status"] = result.status
            conds = {c["type"]: c for c in result.status.get("conditions", [])}
            if conds.get(condition, {}).get("status") == "True":
                return result.status
            assert conds.get("Rejected", {}).get("status") != "True", conds
        raise AssertionError(f"the export never reached {condition}: {body['status']}")

    checked = reconcile_until("PolicyChecked")
    assert checked["sha256"] == written["sha256"]
    assert checked["size"] == len(model)
    assert checked["source"] == written["source"]

    # Under review its bytes cannot change: the same path is refused, whatever the body.
    swap = _put(writer_url, "fraud/detector.onnx", lab.tokens["lab"], b"backdoored model")
    assert swap.status_code == 409
    assert swap.json()["reason"] == "ArtifactExists"
    assert _object(s3, key) == model

    client.CustomObjectsApi(user_api("bob", "system:masters")).create_namespaced_custom_object(
        "regsandbox.io",
        "v1alpha1",
        ns,
        "exportreviews",
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "ExportReview",
            "metadata": {"name": "detector-v1-bob"},
            "spec": {"export": "detector-v1", "decision": "approve", "reviewer": "bob"},
        },
    )
    export["status"] = checked
    released = reconcile_until("Released")
    assert released["destinationUri"] == f"s3://{RELEASED}/v1/detector.onnx"
    copy = s3.client().get_object(Bucket=RELEASED, Key="v1/detector.onnx")["Body"].read()
    assert sha256(copy) == written["sha256"]

    entries = audit_sink.entries_since(start)
    write, swapped = [e for e in entries if e.action == "model.artifact.written"]
    assert (write.details["phase"], swapped.details["reason"]) == ("commit", "ArtifactExists")
    (release,) = [e for e in entries if e.action == "model.export.released"]
    assert write.details["sha256"] == release.details["sha256"] == written["sha256"]
    assert write.details["object"] == key
    assert write.index < release.index


def test_the_write_is_audited_before_it_is_committed(
    writer_url: str, lab: Lab, audit_sink: SwitchableSink, s3: MinioServer
) -> None:
    data = b"weights " * 1000
    start = audit_sink.size
    r = _put(writer_url, "audited.bin", lab.tokens["lab"], data)
    assert r.status_code == 201, r.text
    (entry,) = audit_sink.entries_since(start)
    ns = sandbox_namespace(lab.tenant, "lab")
    assert entry.action == "model.artifact.written"
    assert entry.outcome == "success"
    assert entry.request_id == r.headers["x-request-id"] == r.json()["requestId"]
    assert entry.actor.pod == f"{ns}/train-0"
    assert entry.actor.service_account == f"{ns}/workload"
    assert entry.resource.kind == "ModelArtifact"
    assert entry.resource.name == "audited.bin"
    assert (entry.resource.tenant, entry.resource.sandbox, entry.resource.namespace) == (
        lab.tenant,
        "lab",
        ns,
    )
    assert entry.decision is not None
    assert entry.decision.allow
    details = entry.details
    assert details["phase"] == "commit"
    assert details["method"] == "PUT"
    assert details["key"] == "audited.bin"
    assert details["object"] == lab.key("lab", "audited.bin")
    assert details["bucket"] == OUTBOX
    assert details["bytes"] == len(data)
    assert details["sha256"] == hashlib.sha256(data).hexdigest()
    head = s3.client().head_object(Bucket=OUTBOX, Key=lab.key("lab", "audited.bin"))
    assert head["Metadata"]["regsandbox-request-id"] == entry.request_id


# -- whose outbox ---------------------------------------------------------------------


def test_each_token_writes_only_into_its_own_sandboxs_outbox(
    writer_url: str, lab: Lab, world: World, s3: MinioServer
) -> None:
    mine, theirs = b"lab's model", b"alpha's model"
    assert _put(writer_url, "same-name.bin", lab.tokens["lab"], mine).status_code == 201
    r = _put(writer_url, "same-name.bin", world.token("alpha"), theirs)
    assert r.status_code == 201, r.text
    assert r.json()["sandbox"] == "alpha"
    assert _object(s3, lab.key("lab", "same-name.bin")) == mine
    assert _object(s3, outbox_key(sandbox_id(world.tenant, "alpha"), "same-name.bin")) == theirs

    # Naming the other outbox in the path only nests a key inside one's own.
    other = lab.key("lab", "planted.bin")
    r = _put(writer_url, other, world.token("alpha"), theirs)
    assert r.status_code == 201, r.text
    assert _object(s3, other) is None
    assert _object(s3, outbox_key(sandbox_id(world.tenant, "alpha"), other)) == theirs
    # Relative escapes never get that far.
    sneaky = f"../../{sandbox_id(lab.tenant, 'lab')}/outbox/planted.bin"
    status, _ = _raw_put(writer_url, f"/v1/outbox/{sneaky}", world.token("alpha"), theirs)
    assert status == 400
    assert _object(s3, other) is None


# -- refusals -------------------------------------------------------------------------

BAD_PATHS = [
    "",  # empty
    "/abs.bin",  # absolute (the route sees a leading slash)
    "../escape.bin",
    "dir/../../escape.bin",
    "..",
    "./model.bin",
    "dir//model.bin",
    "%2E%2E/escape.bin",
    "..%2Fescape.bin",
    "dir%5C..%5Cescape.bin",
    "model.bin%00.txt",
    "ctl%01.bin",
    "tab%09.bin",
    "del%7F.bin",
    "sp%20ace.bin",  # not a key a ModelExport can name
    "dir/%252F..%252Fescape.bin",
    "a\\b.bin",
    "x" * 901,  # longer than a ModelExport's artifact path
    "ü.bin",
]


@pytest.mark.parametrize("path", BAD_PATHS, ids=lambda p: p[:24] or "empty")
def test_bad_artifact_paths_are_400_and_store_nothing(
    writer_url: str, lab: Lab, audit_sink: SwitchableSink, s3: MinioServer, path: str
) -> None:
    before = _keys(s3)
    start = audit_sink.size
    status, body = _raw_put(
        writer_url,
        "/v1/outbox/" + path.replace("\\", "%5C").replace("ü", "%C3%BC"),
        lab.tokens["lab"],
    )
    assert status == 400, body
    _refusal(audit_sink, start, "InvalidKey")
    assert _keys(s3) == before


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("old", "SandboxExpired"),
        ("idle", "SandboxNotReady"),
        ("quarantined", "SandboxNotReady"),
        ("doomed", "SandboxTerminating"),
        ("fake", "NotASandbox"),
    ],
)
def test_a_sandbox_that_may_not_act_cannot_write(
    writer_url: str,
    lab: Lab,
    world: World,
    audit_sink: SwitchableSink,
    s3: MinioServer,
    who: str,
    reason: str,
) -> None:
    token = lab.tokens.get(who) or world.token(who)
    before = _keys(s3)
    start = audit_sink.size
    r = _put(writer_url, "late-model.bin", token, b"model")
    assert r.status_code == 403, r.text
    assert r.json()["reason"] == reason
    entry = _refusal(audit_sink, start, reason)
    assert entry.decision is not None
    assert entry.decision.codes == (reason,)
    assert _keys(s3) == before


def test_a_sandbox_that_ends_during_the_upload_keeps_nothing(
    writer_url: str,
    lab: Lab,
    admin_api: client.ApiClient,
    audit_sink: SwitchableSink,
    s3: MinioServer,
) -> None:
    key = lab.key("brief", "model.bin")

    def body() -> Iterator[bytes]:
        yield os.urandom(PART)  # one part goes up while the sandbox is still active
        set_sandbox_status(admin_api, lab.tenant, "brief", expires_in=dt.timedelta(seconds=-1))
        yield os.urandom(1000)

    start = audit_sink.size
    r = _put(writer_url, "model.bin", lab.tokens["brief"], body())
    assert r.status_code == 403, r.text
    assert r.json()["reason"] == "SandboxExpired"
    _refusal(audit_sink, start, "SandboxExpired")
    assert _object(s3, key) is None
    assert _unfinished(s3, key) == []


def test_tokens_the_api_server_does_not_vouch_for_are_401(
    writer_url: str, lab: Lab, admin_api: client.ApiClient, audit_sink: SwitchableSink
) -> None:
    ns = sandbox_namespace(lab.tenant, "lab")
    cases = {
        "MissingToken": None,
        "TokenRejected": pod_token(admin_api, ns, "train-0", audience="someone-else"),
        "TokenNotPodBound": pod_token(admin_api, ns, None),
    }
    for reason, token in cases.items():
        start = audit_sink.size
        r = _put(writer_url, "model.bin", token, b"model")
        assert r.status_code == 401, r.text
        assert r.json()["reason"] == reason
        _refusal(audit_sink, start, reason)


def test_an_existing_artifact_is_never_replaced(
    writer_url: str, lab: Lab, audit_sink: SwitchableSink, s3: MinioServer
) -> None:
    assert _put(writer_url, "v1.bin", lab.tokens["lab"], b"first").status_code == 201
    start = audit_sink.size
    r = _put(writer_url, "v1.bin", lab.tokens["lab"], b"second")
    assert r.status_code == 409
    assert r.json()["reason"] == "ArtifactExists"
    _refusal(audit_sink, start, "ArtifactExists")
    assert _object(s3, lab.key("lab", "v1.bin")) == b"first"


@pytest.mark.parametrize("size", [1000, LIMIT - 1], ids=["one-put", "multipart"])
def test_a_write_racing_another_loses_at_the_commit(
    writer_url: str,
    lab: Lab,
    outbox: RacyOutbox,
    audit_sink: SwitchableSink,
    s3: MinioServer,
    size: int,
) -> None:
    path = f"race-{size}.bin"
    assert _put(writer_url, path, lab.tokens["lab"], b"the winner").status_code == 201
    start = audit_sink.size
    outbox.skip_check = True  # as if the winner committed after this write's check
    try:
        r = _put(writer_url, path, lab.tokens["lab"], os.urandom(size))
    finally:
        outbox.skip_check = False
    assert r.status_code == 409, r.text
    assert _object(s3, lab.key("lab", path)) == b"the winner"
    assert _unfinished(s3, lab.key("lab", path)) == []
    logged, refused = audit_sink.entries_since(start)
    assert (logged.details["phase"], refused.details["phase"]) == ("commit", "refused")
    assert refused.request_id == logged.request_id
    assert refused.details["reason"] == "ArtifactExists"


def test_too_large_is_413_whether_declared_or_streamed(
    writer_url: str, lab: Lab, audit_sink: SwitchableSink, s3: MinioServer
) -> None:
    prefix = lab.key("lab", "huge")
    start = audit_sink.size
    r = _put(writer_url, "huge-declared.bin", lab.tokens["lab"], os.urandom(LIMIT + 1))
    assert r.status_code == 413, r.text
    _refusal(audit_sink, start, "ArtifactTooLarge")

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        block = os.urandom(256 * 1024)
        for _ in range(LIMIT // len(block) + 8):
            yield block

    start = audit_sink.size
    r = _put(writer_url, "huge-streamed.bin", lab.tokens["lab"], chunks())
    assert r.status_code == 413, r.text
    _refusal(audit_sink, start, "ArtifactTooLarge")
    assert _keys(s3, prefix) == []
    for name in ("huge-declared.bin", "huge-streamed.bin"):
        assert _unfinished(s3, lab.key("lab", name)) == []
    # Exactly the limit is fine.
    data = os.urandom(LIMIT)
    r = _put(writer_url, "at-the-limit.bin", lab.tokens["lab"], iter([data[:PART], data[PART:]]))
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == sha256(data)
    assert _object(s3, lab.key("lab", "at-the-limit.bin")) == data


def test_writes_beyond_the_gateways_limit_are_told_to_retry(
    writer_url: str, writer: Gateway, lab: Lab, audit_sink: SwitchableSink, s3: MinioServer
) -> None:
    release = threading.Event()
    held: dict[str, httpx.Response] = {}

    def slow_body() -> Iterator[bytes]:
        yield b"first half, "
        release.wait(30)
        yield b"second half"

    def hold() -> None:
        held["r"] = _put(writer_url, "held.bin", lab.tokens["lab"], slow_body())

    writer.outbox_max_writes = 1
    holder = threading.Thread(target=hold)
    holder.start()
    try:
        # Probe only once the held write holds the one slot: a probe sent earlier can win
        # the slot, and the held write is then (rightly) refused with 429 and gone.
        deadline = time.monotonic() + 30
        while writer.writes_under_way < 1 and "r" not in held:
            assert time.monotonic() < deadline, "the held write never took its slot"
            time.sleep(0.02)
        assert "r" not in held, f"the held write ended early: {held['r'].status_code}"
        deadline = time.monotonic() + 90
        for attempt in range(1, 1000):  # until the held write is under way
            start = audit_sink.size
            r = _put(writer_url, f"queued-{attempt}.bin", lab.tokens["lab"], b"model")
            if r.status_code == 429:
                break
            assert r.status_code == 201, r.text
            assert time.monotonic() < deadline, "the held write never started"
            time.sleep(0.5)
        assert r.headers["retry-after"] == "5"
        assert r.json()["reason"] == "TooManyWrites"
        _refusal(audit_sink, start, "TooManyWrites")
        assert _object(s3, lab.key("lab", f"queued-{attempt}.bin")) is None
    finally:
        release.set()
        holder.join(timeout=30)
        writer.outbox_max_writes = 8
    assert held["r"].status_code == 201
    assert _object(s3, lab.key("lab", "held.bin")) == b"first half, second half"
    # The slot is free again.
    r = _put(writer_url, f"queued-{attempt}.bin", lab.tokens["lab"], b"model")
    assert r.status_code == 201, r.text


def test_an_empty_body_is_400(
    writer_url: str, lab: Lab, audit_sink: SwitchableSink, s3: MinioServer
) -> None:
    start = audit_sink.size
    r = _put(writer_url, "empty.bin", lab.tokens["lab"], b"")
    assert r.status_code == 400
    _refusal(audit_sink, start, "EmptyArtifact")
    assert _object(s3, lab.key("lab", "empty.bin")) is None


@pytest.mark.parametrize("size", [1000, LIMIT - 1], ids=["one-put", "multipart"])
def test_audit_log_down_means_503_and_nothing_stored(
    writer_url: str, lab: Lab, audit_failing: SwitchableSink, s3: MinioServer, size: int
) -> None:
    key = lab.key("lab", f"unlogged-{size}.bin")
    audit_failing.fail_after = 0
    r = _put(writer_url, f"unlogged-{size}.bin", lab.tokens["lab"], os.urandom(size))
    assert r.status_code == 503, r.text
    assert r.json()["reason"] == "AuditUnavailable"
    assert _object(s3, key) is None
    assert _unfinished(s3, key) == []
    audit_failing.fail_after = None
    # Once the log is back, the same write goes through: nothing was left in the way.
    assert _put(writer_url, f"unlogged-{size}.bin", lab.tokens["lab"], b"later").status_code == 201


def test_a_client_that_goes_away_mid_body_leaves_nothing(
    writer_url: str, lab: Lab, audit_sink: SwitchableSink, s3: MinioServer
) -> None:
    key = lab.key("lab", "cut.bin")
    start = audit_sink.size
    parts = urlsplit(writer_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        head = (
            f"PUT /v1/outbox/cut.bin HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {lab.tokens['lab']}\r\nContent-Length: {LIMIT}\r\n\r\n"
        )
        sock.sendall(head.encode() + os.urandom(PART + PART // 2))
    # The refusal is logged, then the parts already uploaded are dropped.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (
        not audit_sink.entries_since(start) or _unfinished(s3, key)
    ):
        time.sleep(0.05)
    entry = _refusal(audit_sink, start, "ClientDisconnected")
    assert entry.outcome == "failure"
    assert _object(s3, key) is None
    assert _unfinished(s3, key) == []


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_openapi_fuzzing_of_writes_finds_no_server_error(
    writer: Gateway, lab: Lab, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(writer))
    (operation,) = [
        op
        for op in (result.ok() for result in schema.get_all_operations())  # type: ignore[union-attr]
        if op.method.upper() == "PUT"
    ]
    auth = {"Authorization": f"Bearer {lab.tokens['lab']}"}

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(headers=auth, checks=[not_a_server_error])

    run()


def test_a_gateway_without_an_outbox_refuses_writes(
    gateway_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    start = audit_sink.size
    r = _put(gateway_url, "model.bin", world.token("alpha"), b"model")
    assert r.status_code == 503
    assert r.json()["reason"] == "OutboxNotConfigured"
    _refusal(audit_sink, start, "OutboxNotConfigured")


def test_settings_refuse_a_limit_beyond_ten_thousand_parts() -> None:
    with pytest.raises(ConfigurationError, match="10,000 parts"):
        GatewaySettings.load(
            audit_log_dir=Path("/nonexistent"),
            outbox_bucket=OUTBOX,
            outbox_part_bytes=PART,
            outbox_max_bytes=10_000 * PART + 1,
        )


def _chart_env(repo_root: Path, component: str, *assignments: str) -> dict[str, str]:
    """The literal environment of a component's container in ``helm template``."""
    args = [arg for assignment in assignments for arg in ("--set", assignment)]
    rendered = subprocess.run(
        [str(tool_path("helm")), "template", "rs", str(repo_root / "charts/regsandbox"), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    pod = next(
        d["spec"]["template"]["spec"]
        for d in yaml.safe_load_all(rendered)
        if d
        and d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    container = pod["containers"][0]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_chart_points_the_gateway_at_the_operators_outbox(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports = (
        "operator.exportOutbox.enabled=true",
        "operator.exportOutbox.bucket=regsandbox-outbox",
        "operator.exportOutbox.endpoint=https://s3.lu-national-1.example.lu",
        "operator.exportOutbox.region=lu-national-1",
        "gateway.outboxMaxBytes=68719476736",
    )
    operator = OutboxSettings.model_validate_json(
        _chart_env(repo_root, "operator", *exports)["REGSANDBOX_EXPORT_OUTBOX"]
    )
    for name in list(os.environ):
        if name.startswith("REGSANDBOX_GATEWAY_"):
            monkeypatch.delenv(name)
    for name, value in _chart_env(repo_root, "gateway", *exports).items():
        monkeypatch.setenv(name, value)
    gateway = GatewaySettings.load(audit_url=None, audit_log_dir=Path("/nonexistent"))
    assert (gateway.outbox_bucket, gateway.outbox_endpoint, gateway.outbox_region) == (
        operator.bucket,
        operator.endpoint,
        operator.region,
    )
    assert gateway.outbox_max_bytes == 64 * 1024**3  # rendered as an integer, not 6.87e+10

    for name in list(os.environ):
        if name.startswith("REGSANDBOX_GATEWAY_"):
            monkeypatch.delenv(name)
    for name, value in _chart_env(repo_root, "gateway").items():
        monkeypatch.setenv(name, value)
    off = GatewaySettings.load(audit_url=None, audit_log_dir=Path("/nonexistent"))
    assert off.outbox_bucket is None  # exports off: no writes either
    # More than 10,000 parts of the default part size: refused at install time.
    with pytest.raises(subprocess.CalledProcessError) as refused:
        _chart_env(repo_root, "gateway", "gateway.outboxMaxBytes=107374182400")
    assert "outboxMaxBytes" in refused.value.stderr
