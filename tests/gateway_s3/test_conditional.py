"""Conditional GetObject / HeadObject: If-Match, If-None-Match, If-(Un)Modified-Since, If-Range.

Expected answers come from RFC 9110 §13 and the S3 API reference (GetObject, HeadObject):
a false ``If-Match`` / ``If-Unmodified-Since`` is 412 PreconditionFailed, a false
``If-None-Match`` / ``If-Modified-Since`` is 304 Not Modified; ``If-Match`` true makes
``If-Unmodified-Since`` irrelevant (200) and ``If-None-Match`` false wins over a true
``If-Modified-Since`` (304). The boto3 cases are also sent to MinIO directly and must get
the same answer there. Edge cases S3 clients rarely send (weak tags, lists, malformed
dates) are sent as raw headers, signed, and checked against the RFC.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from prometheus_client import REGISTRY

from sandbox.devenv.minio import MinioServer
from sandbox.gateway.preconditions import (
    EntityTag,
    NotModified,
    PreconditionFailed,
    Preconditions,
    parse_entity_tags,
    parse_http_date,
)
from sandbox.kube.apply import apply
from tests.gateway.conftest import BUCKET, SwitchableSink, World, _dataset, set_sandbox_status

from .conftest import PodEnv

KEY = "obj.bin"
BODY = b"conditional " * 100
OTHER = '"' + "0" * 32 + '"'
PAST = dt.datetime(2001, 1, 1, tzinfo=dt.UTC)
FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


# -- Parsing and evaluation (RFC 9110 §8.8.3, §13.1, §13.2.2) ----------------------------


def test_entity_tag_lists_parse_as_rfc_9110_writes_them() -> None:
    assert parse_entity_tags("*") is None
    assert parse_entity_tags('"a", W/"b" ,"c,d"') == (
        EntityTag("a"),
        EntityTag("b", weak=True),
        EntityTag("c,d"),
    )
    assert parse_entity_tags("abc") == (EntityTag("abc"),)  # bare tag, as S3 accepts
    junk = parse_entity_tags('"a"x, "b')
    assert junk is not None
    assert len(junk) == 2
    assert not any(t.weak_match(EntityTag("a")) or t.weak_match(EntityTag("b")) for t in junk)


def test_strong_and_weak_comparison_table_of_rfc_9110() -> None:
    """RFC 9110 §8.8.3.2's table: W/"1"~W/"1" weak only, W/"1"~W/"2" neither,
    W/"1"~"1" weak only, "1"~"1" both."""
    w1, w2, s1 = EntityTag("1", True), EntityTag("2", True), EntityTag("1")
    assert (w1.strong_match(w1), w1.weak_match(w1)) == (False, True)
    assert (w1.strong_match(w2), w1.weak_match(w2)) == (False, False)
    assert (w1.strong_match(s1), w1.weak_match(s1)) == (False, True)
    assert (s1.strong_match(s1), s1.weak_match(s1)) == (True, True)


def test_http_dates_in_the_three_formats_and_invalid_ones_ignored() -> None:
    want = dt.datetime(1994, 11, 6, 8, 49, 37, tzinfo=dt.UTC)
    assert parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == want
    assert parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == want
    assert parse_http_date("Sun Nov  6 08:49:37 1994") == want
    for bad in ("yesterday", "", "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT"):
        assert parse_http_date(bad) is None
    only_bad = {"If-Modified-Since": "garbage", "If-Unmodified-Since": "1994"}
    assert Preconditions.from_headers(_ci(only_bad)) is None


def test_precedence_of_rfc_9110_13_2_2() -> None:
    etag, changed = '"abc"', dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    before, after = "Tue, 31 Dec 2019 00:00:00 GMT", "Thu, 02 Jan 2020 00:00:00 GMT"

    def outcome(headers: dict[str, str]) -> int:
        conditions = Preconditions.from_headers(_ci(headers))
        assert conditions is not None
        try:
            conditions.check(etag, changed)
        except PreconditionFailed:
            return 412
        except NotModified:
            return 304
        return 200

    assert outcome({"If-Match": etag, "If-Unmodified-Since": before}) == 200
    assert outcome({"If-Match": OTHER, "If-Unmodified-Since": after}) == 412
    assert outcome({"If-None-Match": OTHER, "If-Modified-Since": after}) == 200
    assert outcome({"If-None-Match": etag, "If-Modified-Since": before}) == 304
    assert outcome({"If-Match": OTHER, "If-None-Match": etag}) == 412
    assert outcome({"If-Unmodified-Since": before, "If-None-Match": etag}) == 412
    assert outcome({"If-Modified-Since": "Wed, 01 Jan 2020 00:00:00 GMT"}) == 304  # equal
    assert outcome({"If-Unmodified-Since": "Wed, 01 Jan 2020 00:00:00 GMT"}) == 200


def test_only_one_condition_the_store_agrees_on_is_sent_upstream() -> None:
    """The store (MinIO) compares a list as one tag and orders conditions otherwise
    than RFC 9110, so it is sent one tag of one condition at most; the rest is the
    gateway's to evaluate on the answer."""

    def sent(headers: dict[str, str]) -> dict[str, str]:
        conditions = Preconditions.from_headers(_ci(headers))
        assert conditions is not None
        return conditions.upstream()

    assert sent({"If-Match": '"a"', "If-None-Match": '"b"'}) == {"IfMatch": '"a"'}
    assert sent({"If-Match": "*"}) == {"IfMatch": "*"}
    assert sent({"If-Match": '"a", "b"'}) == {}
    assert sent({"If-Match": 'W/"a"'}) == {}
    assert sent({"If-None-Match": 'W/"a"'}) == {"IfNoneMatch": '"a"'}
    date = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert sent({"If-None-Match": '"a"', "If-Unmodified-Since": date}) == {}
    assert sent({"If-Modified-Since": date}) == {}


def test_if_range_is_true_only_for_the_version_it_names() -> None:
    etag, changed = '"abc"', dt.datetime(2020, 1, 1, 12, 0, 0, 500_000, tzinfo=dt.UTC)

    def applies(value: str) -> bool:
        conditions = Preconditions.from_headers({"if-range": value})
        assert conditions is not None
        return conditions.range_applies(etag, changed)

    assert applies(etag)
    assert applies("Wed, 01 Jan 2020 12:00:00 GMT")
    assert not applies('W/"abc"')
    assert not applies('"other"')
    assert not applies('"abc", "abc"')
    assert not applies("Wed, 01 Jan 2020 12:00:01 GMT")
    assert not applies("not a date")


def _ci(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# -- Against MinIO and through the gateway ------------------------------------------------

integration = [pytest.mark.integration, pytest.mark.s3]


@dataclass(frozen=True)
class Sides:
    """MinIO directly and the gateway, on the same object."""

    minio: Any
    gateway: Any
    base: str
    dataset: str

    @property
    def etag(self) -> str:
        return str(self.minio.head_object(Bucket=BUCKET, Key=self.base + KEY)["ETag"])


@pytest.fixture(scope="module")
def conditional_dataset(world: World, s3: MinioServer) -> Iterator[tuple[str, str]]:
    """A Dataset holding :data:`KEY`, granted to ``alpha`` for this module only."""
    name = f"{world.tenant}-cond"
    base = f"cond-{secrets.token_hex(3)}/"
    s3.client().put_object(Bucket=BUCKET, Key=base + KEY, Body=BODY)
    apply(world.admin, _dataset(name, base, s3.endpoint))
    set_sandbox_status(
        world.admin,
        world.tenant,
        "alpha",
        granted={world.claims: True, world.other: False, name: True},
    )
    try:
        yield name, base
    finally:
        set_sandbox_status(
            world.admin, world.tenant, "alpha", granted={world.claims: True, world.other: False}
        )


@pytest.fixture
def sides(
    pod_env: PodEnv, world: World, s3: MinioServer, conditional_dataset: tuple[str, str]
) -> Sides:
    pod_env.use(world.token("alpha"))
    name, base = conditional_dataset
    return Sides(s3.client(), boto3.client("s3"), base, name)


def _answer(call: Callable[[], dict[str, Any]]) -> tuple[int, int | None]:
    """Status and, for a 2xx, the body's length."""
    try:
        r = call()
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"], None
    body = r.get("Body")
    length = len(body.read()) if body is not None else int(r["ContentLength"])
    return r["ResponseMetadata"]["HTTPStatusCode"], length


# Each case: id, the boto3 parameters (ETAG stands for the object's ETag), the RFC answer.
ETAG = "<etag>"
CASES: list[tuple[str, dict[str, Any], int]] = [
    ("If-Match-other-ETag-412", {"IfMatch": OTHER}, 412),
    ("If-Match-its-ETag-200", {"IfMatch": ETAG}, 200),
    ("If-Match-star-200", {"IfMatch": "*"}, 200),
    ("If-None-Match-its-ETag-304", {"IfNoneMatch": ETAG}, 304),
    ("If-None-Match-other-ETag-200", {"IfNoneMatch": OTHER}, 200),
    ("If-None-Match-star-304", {"IfNoneMatch": "*"}, 304),
    ("If-Modified-Since-past-200", {"IfModifiedSince": PAST}, 200),
    ("If-Modified-Since-future-304", {"IfModifiedSince": FUTURE}, 304),
    ("If-Unmodified-Since-past-412", {"IfUnmodifiedSince": PAST}, 412),
    ("If-Unmodified-Since-future-200", {"IfUnmodifiedSince": FUTURE}, 200),
    (
        "If-Match-true-wins-over-If-Unmodified-Since-false-200",
        {"IfMatch": ETAG, "IfUnmodifiedSince": PAST},
        200,
    ),
    (
        "If-None-Match-false-wins-over-If-Modified-Since-true-304",
        {"IfNoneMatch": ETAG, "IfModifiedSince": PAST},
        304,
    ),
    (
        "If-None-Match-true-and-If-Modified-Since-false-200",
        {"IfNoneMatch": OTHER, "IfModifiedSince": FUTURE},
        200,
    ),
    ("If-Match-false-before-If-None-Match-412", {"IfMatch": OTHER, "IfNoneMatch": ETAG}, 412),
    ("If-Match-true-Range-206", {"IfMatch": ETAG, "Range": "bytes=0-9"}, 206),
    ("If-Match-false-Range-412", {"IfMatch": OTHER, "Range": "bytes=0-9"}, 412),
    ("If-None-Match-false-Range-304", {"IfNoneMatch": ETAG, "Range": "bytes=0-9"}, 304),
    (
        "If-Match-false-before-an-unsatisfiable-Range-412",
        {"IfMatch": OTHER, "Range": "bytes=99999-"},
        412,
    ),
]


MINIO_DIFFERS = {
    # MinIO also evaluates If-Modified-Since when If-None-Match is present (304);
    # RFC 9110 §13.1.3: a recipient MUST ignore it then.
    "If-None-Match-true-and-If-Modified-Since-false-200": 304,
    # MinIO evaluates If-None-Match before If-Match (304); RFC 9110 §13.2.2: If-Match first.
    "If-Match-false-before-If-None-Match-412": 304,
}
"""Cases where MinIO answers otherwise than RFC 9110; the gateway follows the RFC."""


def _params(params: dict[str, Any], etag: str) -> dict[str, Any]:
    return {k: etag if v == ETAG else v for k, v in params.items()}


@pytest.mark.parametrize("operation", ["get_object", "head_object"])
@pytest.mark.parametrize(("case", "params", "status"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.integration
@pytest.mark.s3
def test_conditional_read_matches_s3_and_rfc_9110(
    sides: Sides, operation: str, case: str, params: dict[str, Any], status: int
) -> None:
    kwargs = _params(params, sides.etag)
    direct = _answer(
        lambda: getattr(sides.minio, operation)(Bucket=BUCKET, Key=sides.base + KEY, **kwargs)
    )
    through = _answer(
        lambda: getattr(sides.gateway, operation)(Bucket=sides.dataset, Key=KEY, **kwargs)
    )
    assert through[0] == status, case
    if case in MINIO_DIFFERS:
        assert direct[0] in (status, MINIO_DIFFERS[case]), case
    else:
        assert through == direct, case


def _raw(client: Any, headers: dict[str, str]) -> None:
    """Send ``headers`` as they are (signed with the request) on every call of ``client``."""

    def put(request: Any, **_: Any) -> None:
        for name, value in headers.items():
            request.headers[name] = value

    client.meta.events.register("before-sign.s3.*", put)


RAW_CASES: list[tuple[str, dict[str, str], int]] = [
    ("If-None-Match-weak-tag-matches-weakly-304", {"If-None-Match": "W/" + ETAG}, 304),
    ("If-Match-weak-tag-never-matches-strongly-412", {"If-Match": "W/" + ETAG}, 412),
    ("If-Match-list-holding-its-ETag-200", {"If-Match": f"{OTHER}, {ETAG}"}, 200),
    ("If-None-Match-list-holding-its-ETag-304", {"If-None-Match": f'"x", {ETAG}'}, 304),
    ("If-Match-unquoted-ETag-200", {"If-Match": "<bare>"}, 200),
    ("If-Match-malformed-412", {"If-Match": '"unterminated'}, 412),
    ("If-Modified-Since-malformed-ignored-200", {"If-Modified-Since": "yesterday"}, 200),
    ("If-Unmodified-Since-malformed-ignored-200", {"If-Unmodified-Since": "1 Jan 1970"}, 200),
    (
        "If-Unmodified-Since-list-of-dates-ignored-200",
        {"If-Unmodified-Since": "Mon, 01 Jan 2001 00:00:00 GMT, Tue, 02 Jan 2001 00:00:00 GMT"},
        200,
    ),
    (
        "If-Modified-Since-asctime-future-304",
        {"If-Modified-Since": "Fri Jan  1 00:00:00 2100"},
        304,
    ),
]


@pytest.mark.parametrize("operation", ["get_object", "head_object"])
@pytest.mark.parametrize(("case", "headers", "status"), RAW_CASES, ids=[c[0] for c in RAW_CASES])
@pytest.mark.integration
@pytest.mark.s3
def test_conditional_edge_cases_as_rfc_9110_says(
    sides: Sides, operation: str, case: str, headers: dict[str, str], status: int
) -> None:
    etag = sides.etag
    sent = {k: v.replace(ETAG, etag).replace("<bare>", etag.strip('"')) for k, v in headers.items()}
    _raw(sides.gateway, sent)
    got = _answer(lambda: getattr(sides.gateway, operation)(Bucket=sides.dataset, Key=KEY))
    assert got[0] == status, case
    if status == 200:
        assert got[1] == len(BODY)


IF_RANGE_CASES: list[tuple[str, str, str, int]] = [
    ("If-Range-its-ETag-206", ETAG, "bytes=0-9", 206),
    ("If-Range-other-ETag-whole-object-200", OTHER, "bytes=0-9", 200),
    ("If-Range-weak-ETag-never-matches-200", "W/" + ETAG, "bytes=0-9", 200),
    ("If-Range-its-Last-Modified-206", "<date>", "bytes=0-9", 206),
    ("If-Range-another-date-200", "Mon, 01 Jan 2001 00:00:00 GMT", "bytes=0-9", 200),
    ("If-Range-malformed-200", "sometime", "bytes=0-9", 200),
    ("If-Range-other-ETag-unsatisfiable-Range-200", OTHER, "bytes=99999-", 200),
    ("If-Range-its-ETag-unsatisfiable-Range-416", ETAG, "bytes=99999-", 416),
]


@pytest.mark.parametrize(
    ("case", "if_range", "byte_range", "status"), IF_RANGE_CASES, ids=[c[0] for c in IF_RANGE_CASES]
)
@pytest.mark.integration
@pytest.mark.s3
def test_if_range_sends_the_range_only_of_the_version_it_names(
    sides: Sides, case: str, if_range: str, byte_range: str, status: int
) -> None:
    """RFC 9110 §13.1.5: a GET's Range with a false If-Range is ignored and the whole
    object sent (200), so a resumed download never mixes two versions."""
    head = sides.minio.head_object(Bucket=BUCKET, Key=sides.base + KEY)
    date = email.utils.format_datetime(head["LastModified"].astimezone(dt.UTC), usegmt=True)
    _raw(sides.gateway, {"If-Range": if_range.replace(ETAG, head["ETag"]).replace("<date>", date)})
    got = _answer(lambda: sides.gateway.get_object(Bucket=sides.dataset, Key=KEY, Range=byte_range))
    assert got[0] == status, case
    if status == 200:
        assert got[1] == len(BODY)
    if status == 206:
        assert got[1] == 10


@pytest.mark.integration
@pytest.mark.s3
def test_304_carries_the_etag_and_no_body(sides: Sides, s3_url: str) -> None:
    etag = sides.etag
    with pytest.raises(ClientError) as caught:
        sides.gateway.get_object(Bucket=sides.dataset, Key=KEY, IfNoneMatch=etag)
    meta = caught.value.response["ResponseMetadata"]
    assert meta["HTTPStatusCode"] == 304
    assert meta["HTTPHeaders"]["etag"] == etag
    assert "last-modified" in meta["HTTPHeaders"]
    assert meta["HTTPHeaders"].get("content-length", "0") == "0"
    assert "x-amz-request-id" in meta["HTTPHeaders"]


@pytest.mark.integration
@pytest.mark.s3
@pytest.mark.parametrize("operation", ["get_object", "head_object"])
def test_a_false_condition_is_logged_as_refused_with_no_bytes(
    sides: Sides, audit_sink: SwitchableSink, operation: str
) -> None:
    """No data flows on a 412 or 304, and the log says so: a ``refused`` record per
    request (outcome ``failure``, allowed, with the reason, status and the ETag
    compared), and no ``read`` record; the refusal counter counts it by reason."""
    etag = sides.etag
    call = getattr(sides.gateway, operation)
    for params, status, reason in (
        ({"IfMatch": OTHER}, 412, "PreconditionFailed"),
        ({"IfNoneMatch": etag}, 304, "NotModified"),
    ):
        start = audit_sink.size
        labels = {"reason": reason, "code": str(status)}
        counted = REGISTRY.get_sample_value("regsandbox_gateway_refusals_total", labels) or 0
        with pytest.raises(ClientError):
            call(Bucket=sides.dataset, Key=KEY, **params)
        assert REGISTRY.get_sample_value("regsandbox_gateway_refusals_total", labels) == (
            counted + 1
        )
        rows = [
            e
            for e in audit_sink.entries_since(start)
            if e.action == "dataset.read" and e.details.get("key") == KEY
        ]
        assert len(rows) == 1, [e.details for e in rows]
        (row,) = rows
        assert row.outcome == "failure"
        assert row.details["phase"] == "refused"
        assert row.details["status"] == status
        assert row.details["reason"] == reason
        assert row.details["bytes"] == 0
        assert row.details["etag"] == etag
        assert row.decision is not None
        assert row.decision.allow is True


@pytest.mark.integration
@pytest.mark.s3
def test_if_match_of_a_version_overwritten_after_head_is_412(sides: Sides) -> None:
    """HEAD, then someone overwrites the object, then GET If-Match the HEAD's ETag: 412,
    never the new body (the condition is decided on the version being read)."""
    key = f"race-{secrets.token_hex(3)}.bin"
    full = sides.base + key
    sides.minio.put_object(Bucket=BUCKET, Key=full, Body=b"old version")
    try:
        old = sides.gateway.head_object(Bucket=sides.dataset, Key=key)["ETag"]
        sides.minio.put_object(Bucket=BUCKET, Key=full, Body=b"new version!")
        with pytest.raises(ClientError) as caught:
            sides.gateway.get_object(Bucket=sides.dataset, Key=key, IfMatch=old)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
        assert caught.value.response["Error"]["Code"] == "PreconditionFailed"
        _raw(sides.gateway, {"If-Range": old})  # resuming the old version's download
        rest = sides.gateway.get_object(Bucket=sides.dataset, Key=key, Range="bytes=5-")
        assert rest["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert rest["Body"].read() == b"new version!"
    finally:
        sides.minio.delete_object(Bucket=BUCKET, Key=full)


@pytest.mark.integration
@pytest.mark.s3
@pytest.mark.parametrize("form", ["one-tag", "list"])
def test_if_match_never_yields_another_version_under_concurrent_overwrites(
    sides: Sides, form: str
) -> None:
    """While a writer flips the object between two versions, every GET If-Match the
    first version's ETag either gets exactly that version or 412. One tag is also
    checked by the store; a list only by the gateway, on the answer it streams."""
    key = f"flip-{secrets.token_hex(3)}.bin"
    full = sides.base + key
    first, second = b"A" * 4096, b"B" * 5000
    sides.minio.put_object(Bucket=BUCKET, Key=full, Body=first)
    wanted = '"' + hashlib.md5(first, usedforsecurity=False).hexdigest() + '"'
    stop = threading.Event()

    def flip() -> None:
        writer = sides.minio
        while not stop.is_set():
            writer.put_object(Bucket=BUCKET, Key=full, Body=second)
            writer.put_object(Bucket=BUCKET, Key=full, Body=first)

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    seen: dict[int, int] = {}
    try:
        for _ in range(40):
            try:
                condition = wanted if form == "one-tag" else f"{OTHER}, {wanted}"
                r = sides.gateway.get_object(Bucket=sides.dataset, Key=key, IfMatch=condition)
            except ClientError as exc:
                status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
                assert status == 412, status
            else:
                assert r["Body"].read() == first
                assert r["ETag"] == wanted
                status = 200
            seen[status] = seen.get(status, 0) + 1
    finally:
        stop.set()
        thread.join(timeout=30)
        sides.minio.delete_object(Bucket=BUCKET, Key=full)
    assert seen.get(200, 0) + seen.get(412, 0) >= 1


@pytest.mark.integration
@pytest.mark.s3
def test_the_rest_api_takes_the_same_conditions(sides: Sides, s3_url: str, world: World) -> None:
    """``GET``/``HEAD /v1/datasets/{d}/objects/{key}`` evaluate the same headers: 412
    with the JSON error body, a bodiless 304 with the ETag, 200 when they hold."""
    etag = sides.etag
    url = f"{s3_url}/v1/datasets/{sides.dataset}/objects/{KEY}"
    auth = {"Authorization": f"Bearer {world.token('alpha')}"}
    failed = httpx.get(url, headers={**auth, "If-Match": OTHER}, timeout=30)
    assert failed.status_code == 412
    assert failed.json()["reason"] == "PreconditionFailed"
    for method in ("GET", "HEAD"):
        same = httpx.request(method, url, headers={**auth, "If-None-Match": etag}, timeout=30)
        assert same.status_code == 304
        assert same.content == b""
        assert same.headers["etag"] == etag
    fresh = httpx.get(url, headers={**auth, "If-Match": etag}, timeout=30)
    assert fresh.status_code == 200
    assert fresh.content == BODY
