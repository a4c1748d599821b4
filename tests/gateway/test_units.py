"""Unit tests: key validation, ranges, the TokenReview cache, RBAC manifests, settings."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client

from sandbox.api.dataset import DatasetLocation
from sandbox.errors import ConfigurationError
from sandbox.gateway.auth import TokenReviewer, Unauthenticated, token_expiry
from sandbox.gateway.authz import Forbidden, GrantResolver, LookupUnavailable, NotCached
from sandbox.gateway.objectkeys import (
    InvalidKey,
    check_raw_path,
    storage_key,
    validate_key,
    validate_listing_prefix,
)
from sandbox.gateway.rbac import gateway_rbac
from sandbox.gateway.s3 import (
    ByteRange,
    EndpointNotAllowed,
    RangeNotSatisfiable,
    Storage,
    parse_range,
)
from sandbox.gateway.settings import GatewaySettings
from sandbox.provision.names import LABEL_SANDBOX, LABEL_TENANT, sandbox_namespace


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "..",
        "../x",
        "a/../b",
        "a/./b",
        "a//b",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a%2Fb",
        "a%2e%2e/b",
        "x" * 1025,
        "a/",
    ],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)


@pytest.mark.parametrize(
    "key", ["a", "a/b.csv", "dir/part-0001.parquet", "é/日本.txt", "a b", "..a", "a.."]
)
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


def test_storage_key_stays_inside_the_prefix() -> None:
    assert storage_key("claims/2024/", "a/b") == "claims/2024/a/b"
    assert storage_key("claims/2024", "a") == "claims/2024/a"
    assert storage_key("", "a") == "a"
    with pytest.raises(InvalidKey):
        storage_key("claims", "../x")


@pytest.mark.parametrize(
    "raw", [b"/v1/a%2Fb", b"/v1/a%2fb", b"/v1/%5C", b"/v1/%2E%2E/x", b"/v1/a%00"]
)
def test_raw_path_escapes(raw: bytes) -> None:
    with pytest.raises(InvalidKey):
        check_raw_path(raw)


def test_listing_prefix() -> None:
    assert validate_listing_prefix("") == ""
    assert validate_listing_prefix("dir/") == "dir/"
    with pytest.raises(InvalidKey):
        validate_listing_prefix("../")


def test_ranges() -> None:
    assert parse_range(None) is None
    assert parse_range("bytes=0-9") == ByteRange(0, 9)
    assert parse_range("bytes=5-") == ByteRange(5, None)
    assert parse_range("bytes=-5") == ByteRange(None, 5)
    assert ByteRange(None, 5).header() == "bytes=-5"
    for bad in ("bytes=-", "bytes=9-0", "bytes=0-1,3-4", "lines=0-1", "bytes=-0"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(bad)


def _jwt(exp: float | None) -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode().rstrip("=")

    claims = {"sub": "x"} if exp is None else {"sub": "x", "exp": exp}
    return f"{part({'alg': 'ES256'})}.{part(claims)}.c2ln"


class FakeAuthn:
    """Stands in for AuthenticationV1Api: answers from a table, counts calls."""

    def __init__(self, authenticated: bool = True) -> None:
        self.calls = 0
        self.authenticated = authenticated

    def create_token_review(self, body: Any, **_: Any) -> Any:
        self.calls += 1
        user = SimpleNamespace(
            username="system:serviceaccount:sbx-t-a:workload",
            extra={"authentication.kubernetes.io/pod-name": ["train-0"]},
        )
        return SimpleNamespace(
            status=SimpleNamespace(
                authenticated=self.authenticated, user=user, audiences=body.spec.audiences
            )
        )


def _reviewer(fake: FakeAuthn, now: list[float], **kwargs: Any) -> TokenReviewer:
    reviewer = TokenReviewer(
        client.ApiClient(), "regsandbox-gateway", clock=lambda: now[0], **kwargs
    )
    reviewer._api = fake
    return reviewer


def test_positive_reviews_are_cached_until_ttl_or_expiry() -> None:
    fake, now = FakeAuthn(), [1000.0]
    reviewer = _reviewer(fake, now, cache_seconds=10)
    token = _jwt(exp=1005.0)
    identity = reviewer.review(token)
    assert (identity.namespace, identity.pod) == ("sbx-t-a", "train-0")
    reviewer.review(token)
    assert fake.calls == 1
    now[0] = 1004.9
    reviewer.review(token)
    assert fake.calls == 1
    now[0] = 1005.0  # the token's exp, before the 10 s TTL: asked again
    reviewer.review(token)
    assert fake.calls == 2
    assert token not in repr(reviewer)
    assert all(isinstance(k, bytes) and len(k) == 32 for k in reviewer._cache)


def test_cached_answers_only_from_the_cache_and_never_asks() -> None:
    fake, now = FakeAuthn(), [1000.0]
    reviewer = _reviewer(fake, now, cache_seconds=10)
    token = _jwt(exp=1100.0)
    assert reviewer.cached(token) is None
    assert fake.calls == 0
    identity = reviewer.review(token)
    assert reviewer.cached(token) == identity
    now[0] = 1010.0  # past the TTL: no longer answered from the cache
    assert reviewer.cached(token) is None
    assert fake.calls == 1
    with pytest.raises(Unauthenticated, match="no bearer token"):
        reviewer.cached(None)
    with pytest.raises(Unauthenticated, match="malformed"):
        reviewer.cached("bad token\n")


def test_negative_reviews_and_tokens_without_exp_are_not_cached() -> None:
    now = [1000.0]
    refused = FakeAuthn(authenticated=False)
    reviewer = _reviewer(refused, now)
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            reviewer.review(_jwt(exp=2000.0))
    assert refused.calls == 2
    fake = FakeAuthn()
    reviewer = _reviewer(fake, now)
    reviewer.review(_jwt(exp=None))
    reviewer.review(_jwt(exp=None))
    assert fake.calls == 2


def test_cache_is_bounded() -> None:
    fake, now = FakeAuthn(), [1000.0]
    reviewer = _reviewer(fake, now, cache_size=3)
    for i in range(10):
        reviewer.review(_jwt(exp=2000.0 + i))
    assert len(reviewer._cache) == 3


def test_token_expiry() -> None:
    assert token_expiry(_jwt(exp=12.0)) == 12.0
    assert token_expiry("garbage") is None
    assert token_expiry("a.!!!.c") is None


def test_rbac_is_least_privilege() -> None:
    objs = gateway_rbac("sys")
    role = next(o for o in objs if o["kind"] == "ClusterRole")
    verbs = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    assert verbs == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("", "namespaces", "get"),
        ("regsandbox.io", "sandboxes", "get"),
        ("regsandbox.io", "datasets", "get"),
    }


def test_settings_need_one_audit_sink_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="audit"):
        GatewaySettings.load()
    monkeypatch.setenv("REGSANDBOX_GATEWAY_AUDIT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("REGSANDBOX_GATEWAY_S3_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("REGSANDBOX_GATEWAY_S3_SECRET_ACCESS_KEY", "very-secret-value")
    settings = GatewaySettings.load()
    assert "very-secret-value" not in repr(settings)
    assert settings.audience == "regsandbox-gateway"


def test_endpoint_allow_list_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGSANDBOX_GATEWAY_AUDIT_URL", "http://127.0.0.1:1")
    assert GatewaySettings.load().s3_endpoints == []
    monkeypatch.setenv("REGSANDBOX_GATEWAY_S3_ENDPOINTS", '["https://s3.example.lu"]')
    assert GatewaySettings.load().s3_endpoints == ["https://s3.example.lu"]


@pytest.mark.parametrize(
    ("endpoint", "allowed"),
    [
        ("https://s3.example.lu", True),
        ("HTTPS://S3.Example.LU/", True),
        ("https://s3.example.lu.attacker.test", False),
        ("http://s3.example.lu", False),
        ("https://s3.example.lu:8443", False),
        (None, True),
    ],
)
def test_storage_refuses_endpoints_outside_the_allow_list(
    endpoint: str | None, allowed: bool
) -> None:
    storage = Storage(allowed_endpoints=["https://s3.example.lu/"])
    location = DatasetLocation(
        bucket="bucket", prefix="p/", region="aws:eu-west-1", endpoint=endpoint
    )
    if allowed:
        assert storage.client(location) is storage.client(location)
    else:
        with pytest.raises(EndpointNotAllowed):
            storage.client(location)


class FakeObjects:
    """Stands in for the API client's call_api: objects by kind, counts reads."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.reads: list[str] = []

    def call_api(self, path: str, method: str, **_: Any) -> dict[str, Any] | None:
        self.reads.append(path)
        kind = path.rstrip("/").split("/")[-2]
        return self.objects.get(kind)


def test_cached_only_authorisation_never_reads_and_keeps_every_check() -> None:
    ns = sandbox_namespace("bank", "fraud")
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    fake = FakeObjects(
        {
            "namespaces": {"metadata": {"labels": {LABEL_TENANT: "bank", LABEL_SANDBOX: "fraud"}}},
            "sandboxes": {
                "metadata": {},
                "status": {
                    "namespace": ns,
                    "expiresAt": expires,
                    "conditions": [  # every field the CRD schema requires of a condition
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Provisioned",
                            "lastTransitionTime": expires,
                        }
                    ],
                    "datasets": [{"name": "claims", "granted": True}],
                },
            },
            "datasets": {
                "metadata": {},
                "spec": {"location": {"bucket": "bucket", "prefix": "p/", "region": "lu-1"}},
            },
        }
    )
    resolver = GrantResolver(fake, cache_seconds=30)  # type: ignore[arg-type]
    with pytest.raises(NotCached):
        resolver.authorize(ns, "claims", cached_only=True)
    assert fake.reads == []
    grant = resolver.authorize(ns, "claims")
    assert len(fake.reads) == 3
    assert resolver.authorize(ns, "claims", cached_only=True) == grant
    with pytest.raises(Forbidden, match="not granted"):
        resolver.authorize(ns, "other", cached_only=True)  # the sandbox is cached
    assert len(fake.reads) == 3


def test_objects_read_late_in_their_time_are_refreshed_in_the_background() -> None:
    now = [0.0]
    fake = FakeObjects({"datasets": {"metadata": {}, "spec": {}}})
    resolver = GrantResolver(fake, cache_seconds=10, clock=lambda: now[0])  # type: ignore[arg-type]
    try:
        resolver._get("Dataset", "claims")
        now[0] = 3.0  # first half of its time: just answered
        resolver._get("Dataset", "claims")
        assert len(fake.reads) == 1
        now[0] = 7.0  # second half: answered, and read again behind the scenes
        resolver._get("Dataset", "claims", cached_only=True)
        deadline = time.monotonic() + 5
        while len(fake.reads) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(fake.reads) == 2
        now[0] = 12.0  # past the first read's time, within the refresh's
        resolver._get("Dataset", "claims", cached_only=True)
        now[0] = 17.5  # past both: nothing stale is ever answered
        with pytest.raises(NotCached):
            resolver._get("Dataset", "claims", cached_only=True)
    finally:
        resolver.close()


def _sandbox_objects(ns: str, **status: Any) -> FakeObjects:
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "Provisioned",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    return FakeObjects(
        {
            "namespaces": {"metadata": {"labels": {LABEL_TENANT: "bank", LABEL_SANDBOX: "fraud"}}},
            "sandboxes": {
                "metadata": {},
                "status": {"namespace": ns, "conditions": [ready], **status},
            },
        }
    )


def test_a_sandbox_status_the_api_model_refuses_is_not_trusted() -> None:
    ns = sandbox_namespace("bank", "fraud")
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    for bad in (
        {"expiresAt": later, "datasets": [{"name": "claims", "granted": "maybe"}]},
        {"expiresAt": later, "conditions": [{"type": "Ready", "status": "True"}]},
        {"expiresAt": "next tuesday"},
    ):
        resolver = GrantResolver(_sandbox_objects(ns, **bad), cache_seconds=0)  # type: ignore[arg-type]
        with pytest.raises(LookupUnavailable, match="cannot read"):
            resolver.active(ns)


def test_an_expiry_without_a_time_zone_counts_as_expired() -> None:
    ns = sandbox_namespace("bank", "fraud")
    naive = (dt.datetime.now() + dt.timedelta(days=2)).replace(microsecond=0).isoformat()
    resolver = GrantResolver(_sandbox_objects(ns, expiresAt=naive), cache_seconds=0)  # type: ignore[arg-type]
    with pytest.raises(Forbidden) as refused:
        resolver.active(ns)
    assert refused.value.reason == "SandboxExpired"
