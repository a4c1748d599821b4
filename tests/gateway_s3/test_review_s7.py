"""Attacker-minded review of conditional reads (session 7), as tests.

A tenant's workload controls every header of its requests. A condition header that is
no valid entity-tag must be decided by the gateway (it matches nothing: If-Match is
false, 412) and logged as such — never forwarded to the store so that the store's
"400 Bad Request" is reported, logged and counted as the *storage* failing (502
StorageUnavailable), which a tenant could then trigger at will to page the platform's
on-call or hide a real outage among false ones.

Real servers: the control plane, MinIO and the gateway of :mod:`tests.gateway_s3`.
"""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from sandbox.gateway.preconditions import MAX_TAG_CHARS, PreconditionFailed, Preconditions
from tests.gateway.conftest import SwitchableSink
from tests.gateway_s3.test_conditional import (
    KEY,
    Sides,
    _answer,
    _raw,
    conditional_dataset,
    sides,
)

__all__ = ["conditional_dataset", "sides"]  # the fixtures this module borrows

LONG_TAG = '"' + "a" * 9000 + '"'
"""Longer than any ETag a store gives (S3: 32 hex digits, and "-N" for a multipart
object); it fits in one request header of the gateway's HTTP server, so it reaches the
gateway, which sends it on to the store, whose header limit refuses it."""

# header, the RFC 9110 answer: the tag matches no version of the object
CASES = [("If-Match", 412, "PreconditionFailed"), ("If-None-Match", 200, None)]


@pytest.mark.parametrize("operation", ["get_object", "head_object"])
@pytest.mark.parametrize(("header", "status", "reason"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.integration
@pytest.mark.s3
def test_an_overlong_entity_tag_is_decided_by_the_gateway_not_the_store(
    sides: Sides,
    audit_sink: SwitchableSink,
    operation: str,
    header: str,
    status: int,
    reason: str | None,
) -> None:
    labels = {"reason": "StorageUnavailable", "code": "502"}
    storage_failures = REGISTRY.get_sample_value("regsandbox_gateway_refusals_total", labels) or 0
    start = audit_sink.size
    _raw(sides.gateway, {header: LONG_TAG})
    got = _answer(lambda: getattr(sides.gateway, operation)(Bucket=sides.dataset, Key=KEY))
    rows = [
        e
        for e in audit_sink.entries_since(start)
        if e.action == "dataset.read" and e.details.get("key") == KEY
    ]
    assert got[0] == status, header  # before the fix: 502, retried 3 times by the SDK
    assert [r.details.get("reason") for r in rows] == [reason], header
    after = REGISTRY.get_sample_value("regsandbox_gateway_refusals_total", labels) or 0
    assert after == storage_failures, header


@pytest.mark.integration
@pytest.mark.s3
def test_a_range_ignored_for_a_false_if_range_is_not_logged_as_the_range_read(
    sides: Sides, audit_sink: SwitchableSink
) -> None:
    """The log must say what was sent: with If-Range naming another version the whole
    object is sent (200), so its entry must not carry ``range: bytes=0-9`` as if ten
    bytes were read — the S3 surface already drops a Range it ignores (an unknown unit)
    from the entry, and a supervisor reading "range 0-9" beside 1,200 bytes cannot tell
    which is true."""
    start = audit_sink.size
    _raw(sides.gateway, {"If-Range": '"' + "0" * 32 + '"'})
    answer = sides.gateway.get_object(Bucket=sides.dataset, Key=KEY, Range="bytes=0-9")
    body = answer["Body"].read()
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    [row] = [
        e
        for e in audit_sink.entries_since(start)
        if e.action == "dataset.read" and e.details.get("key") == KEY
    ]
    assert row.details["bytes"] == len(body)
    assert row.details["whole_object"] is True
    assert "range" not in row.details, row.details  # before the fix: "bytes=0-9"


def test_a_tag_longer_than_any_etag_matches_nothing_and_is_not_sent_upstream() -> None:
    longest = "a" * MAX_TAG_CHARS
    for value in (f'"{longest}a"', f'W/"{longest}a"', f"{longest}a"):
        conditions = Preconditions.from_headers({"if-match": value})
        assert conditions is not None
        assert conditions.upstream() == {}, value
        with pytest.raises(PreconditionFailed):
            conditions.check(f'"{longest}a"', None)
    kept = Preconditions.from_headers({"if-match": f'"{longest}"'})
    assert kept is not None
    assert kept.upstream() == {"IfMatch": f'"{longest}"'}
    kept.check(f'"{longest}"', None)
