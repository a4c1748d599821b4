"""Refusals: bad tokens, wrong sandboxes, ungranted datasets, escaping keys, a down log.

Every refusal is answered 400/401/403/503 and leaves exactly one audit record.
"""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from kubernetes import client

from sandbox.gateway import Gateway
from sandbox.provision.names import sandbox_namespace

from .conftest import BIG, SpyStorage, SwitchableSink, World, pod_token, set_sandbox_status

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def _raw_get(base: str, path: str, token: str | None) -> tuple[int, bytes]:
    """GET ``path`` exactly as written (no client-side normalisation of dots or escapes)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        if token:
            conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _one_refusal(sink: SwitchableSink, start: int, reason: str, outcome: str = "denied") -> None:
    (entry,) = sink.entries_since(start)
    assert entry.outcome == outcome
    assert entry.details["reason"] == reason
    assert entry.details["phase"] == "refused"


@pytest.mark.parametrize(
    ("who", "dataset", "status", "reason"),
    [
        ("beta", "claims", 403, "DatasetNotGranted"),  # another sandbox's token
        ("alpha", "other", 403, "DatasetNotGranted"),  # requested but denied by policy
        ("old", "claims", 403, "SandboxExpired"),
        ("idle", "claims", 403, "SandboxNotReady"),
        ("fake", "claims", 403, "NotASandbox"),
    ],
)
def test_sandbox_refusals(
    gateway_url: str,
    world: World,
    audit_sink: SwitchableSink,
    who: str,
    dataset: str,
    status: int,
    reason: str,
) -> None:
    name = world.claims if dataset == "claims" else world.other
    start = audit_sink.size
    for url in (f"/v1/datasets/{name}/objects/small.csv", f"/v1/datasets/{name}/objects"):
        r = httpx.get(gateway_url + url, headers={"Authorization": f"Bearer {world.token(who)}"})
        assert r.status_code == status, r.text
        assert r.json()["reason"] == reason
        assert b"id,amount" not in r.content
    read, listing = audit_sink.entries_since(start)
    assert (read.action, listing.action) == ("dataset.read", "dataset.list")
    for entry in (read, listing):
        assert entry.outcome == "denied"
        assert entry.decision is not None
        assert entry.decision.codes == (reason,)
        pod = "p" if who == "fake" else "train-0"
        assert entry.actor.pod == f"{entry.actor.service_account.split('/')[0]}/{pod}"  # type: ignore[union-attr]


def _tokens(world: World) -> dict[str, str | None]:
    ns = sandbox_namespace(world.tenant, "alpha")
    return {
        "missing": None,
        "garbage": "not-a-token",
        "forged-jwt": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "wrong-audience": pod_token(
            world.admin, ns, "train-0", audience="https://kubernetes.default.svc"
        ),
        "not-pod-bound": pod_token(world.admin, ns, None),
    }


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("missing", "MissingToken"),
        ("garbage", "TokenRejected"),
        ("forged-jwt", "TokenRejected"),
        ("wrong-audience", "TokenRejected"),
        ("not-pod-bound", "TokenNotPodBound"),
    ],
)
def test_token_refusals(
    gateway_url: str, world: World, audit_sink: SwitchableSink, kind: str, reason: str
) -> None:
    token = _tokens(world)[kind]
    start = audit_sink.size
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{gateway_url}/v1/datasets/{world.claims}/objects/small.csv", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["reason"] == reason
    _one_refusal(audit_sink, start, reason)
    entry = audit_sink.entries_since(start)[0]
    if token:
        assert token not in r.text
        assert token not in entry.to_bytes().decode()


ESCAPES = [
    "../small.csv",
    "..%2Fsmall.csv",
    "dir/..%2F..%2Fother/x.txt",
    "%2E%2E/%2E%2E/other/x.txt",
    "dir/../../../other/x.txt",
    "%2Fclaims/2024-secret/leak.txt",
    "/claims/2024-secret/leak.txt",
    "..\\2024-secret\\leak.txt",
    "dir%5C..%5Cleak.txt",
    "small.csv%00.txt",
    "dir/%252F..%252Fleak.txt",
    "./small.csv",
    "dir//part-0001.bin",
]


@pytest.mark.parametrize("key", ESCAPES)
def test_escaping_keys_are_400_and_never_reach_storage(
    gateway_url: str, gateway: Gateway, world: World, audit_sink: SwitchableSink, key: str
) -> None:
    spy = gateway.storage
    assert isinstance(spy, SpyStorage)
    asked, start = len(spy.keys), audit_sink.size
    status, body = _raw_get(
        gateway_url, f"/v1/datasets/{world.claims}/objects/{key}", world.token("alpha")
    )
    assert status == 400, body
    assert b"outside" not in body
    assert b"other dataset" not in body
    assert spy.keys[asked:] == []
    _one_refusal(audit_sink, start, "InvalidKey")


@pytest.mark.parametrize("params", ["prefix=../", "prefix=%2F", "after=../other", "prefix=a%5Cb"])
def test_escaping_listing_filters_are_400(
    gateway_url: str, gateway: Gateway, world: World, params: str
) -> None:
    spy = gateway.storage
    assert isinstance(spy, SpyStorage)
    asked = len(spy.keys)
    status, _ = _raw_get(
        gateway_url, f"/v1/datasets/{world.claims}/objects?{params}", world.token("alpha")
    )
    assert status == 400
    assert spy.keys[asked:] == []


def test_audit_down_means_503_and_no_data(
    gateway_url: str, world: World, audit_failing: SwitchableSink
) -> None:
    audit_failing.fail_after = 0
    auth = {"Authorization": f"Bearer {world.token('alpha')}"}
    for path in ("small.csv", "big.bin"):
        r = httpx.get(f"{gateway_url}/v1/datasets/{world.claims}/objects/{path}", headers=auth)
        assert r.status_code == 503
        assert r.json()["reason"] == "AuditUnavailable"
        assert len(r.content) < 1000
    denied = httpx.get(f"{gateway_url}/v1/datasets/{world.claims}/objects/small.csv")
    assert denied.status_code == 503


def test_audit_failing_at_completion_cuts_the_stream(
    gateway_url: str, world: World, audit_failing: SwitchableSink
) -> None:
    start = audit_failing.size
    audit_failing.fail_after = 1  # the started record goes through, the completion does not
    received = 0
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/big.bin"
    auth = {"Authorization": f"Bearer {world.token('alpha')}"}
    with (  # noqa: PT012 - the error comes mid-body
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", url, headers=auth, timeout=60) as r,
    ):
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            received += len(chunk)
    assert received < BIG
    (started,) = audit_failing.entries_since(start)
    assert started.details["phase"] == "started"


def test_client_disconnect_is_logged_as_failure(
    gateway_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    start = audit_sink.size
    parts = urlsplit(gateway_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        request = (
            f"GET /v1/datasets/{world.claims}/objects/big.bin HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: Bearer {world.token('alpha')}\r\n\r\n"
        )
        sock.sendall(request.encode())
        sock.recv(65536)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(audit_sink.entries_since(start)) < 2:
        time.sleep(0.05)
    _started, completed = audit_sink.entries_since(start)
    assert completed.outcome == "failure"
    assert completed.details["reason"] == "ClientDisconnected"
    assert isinstance(completed.details["bytes"], int)
    assert completed.details["bytes"] < BIG


def test_revoked_grant_is_refused(
    gateway_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/small.csv"
    auth = {"Authorization": f"Bearer {world.token('alpha')}"}
    assert httpx.get(url, headers=auth).status_code == 200
    grants = {world.claims: False, world.other: False}
    set_sandbox_status(world.admin, world.tenant, "alpha", granted=grants)
    try:
        assert httpx.get(url, headers=auth).status_code == 403
        set_sandbox_status(
            world.admin,
            world.tenant,
            "alpha",
            expires_in=dt.timedelta(seconds=-1),
            granted={world.claims: True},
        )
        assert httpx.get(url, headers=auth).json()["reason"] == "SandboxExpired"
    finally:
        set_sandbox_status(
            world.admin, world.tenant, "alpha", granted={world.claims: True, world.other: False}
        )
    assert httpx.get(url, headers=auth).status_code == 200


def _set_endpoint(world: World, dataset: str, endpoint: str) -> None:
    client.CustomObjectsApi(world.admin).patch_cluster_custom_object(
        "regsandbox.io",
        "v1alpha1",
        "datasets",
        dataset,
        {"spec": {"location": {"endpoint": endpoint}}},
    )


def test_endpoint_outside_the_allow_list_never_gets_the_credentials(
    gateway_url: str, gateway: Gateway, world: World, audit_sink: SwitchableSink
) -> None:
    storage = gateway.storage
    assert isinstance(storage, SpyStorage)
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/small.csv"
    auth = {"Authorization": f"Bearer {world.token('alpha')}"}
    original = httpx.get(url, headers=auth)
    assert original.status_code == 200
    dataset = client.CustomObjectsApi(world.admin).get_cluster_custom_object(
        "regsandbox.io", "v1alpha1", "datasets", world.claims
    )
    endpoint = dataset["spec"]["location"]["endpoint"]
    _set_endpoint(world, world.claims, "http://127.0.0.1:9/")
    try:
        start, asked = audit_sink.size, len(storage.keys)
        refused = httpx.get(url, headers=auth)
        assert refused.status_code == 403
        assert refused.json()["reason"] == "EndpointNotAllowed"
        _one_refusal(audit_sink, start, "EndpointNotAllowed")
        # The spy records the call, but the client is refused before any request is
        # signed or sent: nothing listens on port 9 and the answer is still a clean 403.
        assert len(storage.keys) == asked + 1
    finally:
        _set_endpoint(world, world.claims, endpoint)
    # The same endpoint spelt with a trailing slash and an upper-case host is the same.
    _set_endpoint(world, world.claims, endpoint.upper().replace("HTTP://", "http://") + "/")
    try:
        assert httpx.get(url, headers=auth).status_code == 200
    finally:
        _set_endpoint(world, world.claims, endpoint)
