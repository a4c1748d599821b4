"""The S3 surface's parts without servers: session credentials, SigV4 checks, replays."""

from __future__ import annotations

import base64
import datetime as dt
import os
from pathlib import Path

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sandbox.errors import ConfigurationError
from sandbox.gateway.auth import Identity
from sandbox.gateway.sigv4 import (
    MAX_SKEW_SECONDS,
    READ_REPLAY_GRACE_SECONDS,
    ReplayGuard,
    ReplayMemoryFull,
    RequestReplayed,
    SignatureRefused,
    amz_time,
    parse_authorization,
    verify_signature,
)
from sandbox.gateway.sts import CredentialIssuer, SessionRefused, load_server_keys

POD = Identity("sbx-t-alpha", "workload", "train-0", "uid-1")
NOW = 1_800_000_000.0


def _issuer(keys: list[bytes], now: float = NOW) -> CredentialIssuer:
    return CredentialIssuer(keys, clock=lambda: now)


def test_session_round_trip_binds_the_pod() -> None:
    key = os.urandom(32)
    creds = _issuer([key]).issue("jwt", POD, not_after=NOW + 7200)
    assert creds.expiration == NOW + 3600
    assert creds.access_key_id.startswith("ASIA")
    assert len(creds.access_key_id) == 20
    assert "jwt" not in creds.session_token  # sealed, not only signed
    session = _issuer([key]).open(creds.session_token, creds.access_key_id)
    assert (session.web_token, session.namespace, session.pod) == ("jwt", POD.namespace, POD.pod)
    assert session.secret_access_key == creds.secret_access_key


def test_lifetime_is_capped_by_the_sandbox_and_duration() -> None:
    issuer = _issuer([os.urandom(32)])
    assert issuer.issue("jwt", POD, not_after=NOW + 100).expiration == NOW + 100
    assert issuer.issue("jwt", POD, not_after=NOW + 9999, duration=900).expiration == NOW + 900


def test_sessions_are_refused_when_tampered_expired_or_keyed_elsewhere() -> None:
    key = os.urandom(32)
    creds = _issuer([key]).issue("jwt", POD, not_after=NOW + 3600)
    blob = bytearray(base64.urlsafe_b64decode(creds.session_token[5:] + "=="))
    blob[20] ^= 1
    tampered = "rsb1." + base64.urlsafe_b64encode(bytes(blob)).decode().rstrip("=")
    cases = [
        (_issuer([key]), tampered, creds.access_key_id, "InvalidToken"),
        (_issuer([key]), creds.session_token, "ASIAAAAAAAAAAAAAAAAA", "InvalidAccessKeyId"),
        (_issuer([key], NOW + 3600), creds.session_token, creds.access_key_id, "ExpiredToken"),
        (_issuer([os.urandom(32)]), creds.session_token, creds.access_key_id, "InvalidToken"),
        (_issuer([key]), None, creds.access_key_id, "InvalidAccessKeyId"),
    ]
    for issuer, token, key_id, reason in cases:
        with pytest.raises(SessionRefused) as info:
            issuer.open(token, key_id)
        assert info.value.reason == reason


def test_key_rotation_keeps_old_sessions_while_the_old_key_is_listed() -> None:
    old, new = os.urandom(32), os.urandom(32)
    creds = _issuer([old]).issue("jwt", POD, not_after=NOW + 3600)
    assert _issuer([new, old]).open(creds.session_token, creds.access_key_id).pod == "train-0"
    with pytest.raises(SessionRefused):
        _issuer([new]).open(creds.session_token, creds.access_key_id)


def test_server_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(os.urandom(32).hex() + "\n" + base64.b64encode(os.urandom(48)).decode())
    assert [len(k) for k in load_server_keys(path)] == [32, 48]
    path.write_text(os.urandom(16).hex())
    with pytest.raises(ConfigurationError, match="shorter"):
        load_server_keys(path)
    path.write_text("")
    with pytest.raises(ConfigurationError, match="no key"):
        load_server_keys(path)


def _signed(secret: str, url: str = "http://gw:8080/data/a%20b.csv?x-id=GetObject") -> AWSRequest:
    request = AWSRequest(
        method="GET",
        url=url,
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "Host": "gw:8080"},
    )
    S3SigV4Auth(Credentials("ASIAKEY", secret, "tok"), "s3", "us-east-1").add_auth(request)
    return request


def _verify(request: AWSRequest, secret: str, **changes: str) -> None:
    headers = {k.lower(): v for k, v in request.headers.items()}
    signed = parse_authorization(headers["authorization"])
    path, _, query = request.url.split("gw:8080", 1)[1].partition("?")
    verify_signature(
        signed,
        secret,
        method=changes.get("method", request.method),
        host_url="http://gw:8080",
        raw_path=changes.get("path", path),
        raw_query=changes.get("query", query),
        headers=headers,
        amz_date=headers["x-amz-date"],
    )


def test_botocore_signatures_verify_and_any_change_breaks_them() -> None:
    request = _signed("secret")
    _verify(request, "secret")
    for change in ({"method": "PUT"}, {"path": "/data/other.csv"}, {"query": "x-id=PutObject"}):
        with pytest.raises(SignatureRefused) as info:
            _verify(request, "secret", **change)
        assert info.value.reason == "SignatureDoesNotMatch"
    with pytest.raises(SignatureRefused):
        _verify(request, "other secret")


def test_malformed_authorization_and_skew() -> None:
    for value in (None, "Bearer x", "AWS4-HMAC-SHA256 Credential=broken"):
        with pytest.raises(SignatureRefused):
            parse_authorization(value)
    stamp = dt.datetime.fromtimestamp(NOW, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    assert amz_time(stamp, NOW + MAX_SKEW_SECONDS) == NOW
    with pytest.raises(SignatureRefused) as info:
        amz_time(stamp, NOW + MAX_SKEW_SECONDS + 1)
    assert info.value.reason == "RequestTimeTooSkewed"


def test_replay_guard() -> None:
    now = [NOW]
    guard = ReplayGuard(max_entries=2, clock=lambda: now[0])
    guard.first_use("a", NOW)
    guard.first_use("a", NOW, read=True)  # an SDK's same-second duplicate read
    with pytest.raises(RequestReplayed):
        guard.first_use("a", NOW)  # a write: never twice
    now[0] = NOW + READ_REPLAY_GRACE_SECONDS + 1
    with pytest.raises(RequestReplayed):
        guard.first_use("a", NOW, read=True)
    guard.first_use("b", NOW)
    with pytest.raises(ReplayMemoryFull):
        guard.first_use("c", NOW)  # full: refuse rather than forget early
    now[0] = NOW + MAX_SKEW_SECONDS + 2
    guard.first_use("c", now[0])  # the old ones have left the window
    assert len(guard) == 1
