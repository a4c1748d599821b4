"""Differential S3 conformance: the same boto3 calls against MinIO and through the gateway.

No external conformance suite (ceph s3-tests, MinIO mint) can run here, so each case
below sends one operation of the S3 API reference to MinIO directly (a real S3 server)
and to the gateway, on the same objects, and compares what S3 clients rely on. A case's
id names the operation and the behaviour of the reference it checks. Where the gateway
differs on purpose, the difference itself is asserted:

- ListBuckets lists the sandbox's granted datasets and ``outbox``, not the store's buckets;
- a dataset is a prefix of a store bucket: keys are compared with that prefix removed;
- only ``Delimiter=/`` is offered (others are ``InvalidArgument``);
- writes go only to the outbox (multipart: a MinIO scratch bucket against the outbox);
  an outbox part's ETag is the first 32 hex digits of its SHA-256, not an MD5.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from botocore.exceptions import ClientError

from sandbox.devenv.minio import MinioServer
from sandbox.kube.apply import apply
from sandbox.provision.names import sandbox_id
from tests.gateway.conftest import (
    BUCKET,
    SwitchableSink,
    World,
    _dataset,
    set_sandbox_status,
)

from .conftest import OUTBOX, PodEnv

pytestmark = [pytest.mark.integration, pytest.mark.s3]

MIB = 1024 * 1024
BIG = 10_000

# Keys of the conformance dataset: nesting, a space, unicode, '+', '%', '&', '~'.
KEYS: dict[str, bytes] = {
    "a.txt": b"alpha\n",
    "b/c.txt": b"c" * 17,
    "b/d e.txt": b"space",
    "b/\u00fcber.txt": b"unicode",
    "b/x+y.txt": b"plus",
    "b/p%20q&r~s.txt": b"escapes",
    "b/sub/z.txt": b"deep",
    "b/sub/zz/y.txt": b"deeper",
    "big.bin": os.urandom(BIG),
    "empty.bin": b"",
    "zeta/last.txt": b"last",
}


@dataclass(frozen=True)
class Sides:
    """MinIO directly and the gateway, on the same objects."""

    minio: Any
    gateway: Any
    bucket: str  # the store bucket
    base: str  # the dataset's prefix in it
    dataset: str  # the gateway's bucket name for it


@pytest.fixture(scope="module")
def conformance_dataset(world: World, s3: MinioServer) -> Iterator[tuple[str, str]]:
    """A Dataset of :data:`KEYS` granted to ``alpha`` for this module only."""
    name = f"{world.tenant}-conf"
    base = f"conf-{secrets.token_hex(3)}/"
    store = s3.client()
    for key, data in KEYS.items():
        store.put_object(Bucket=BUCKET, Key=base + key, Body=data)
    store.put_object(Bucket=BUCKET, Key=base.rstrip("/") + "-outside/x.txt", Body=b"outside")
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
    pod_env: PodEnv, world: World, s3: MinioServer, conformance_dataset: tuple[str, str]
) -> Sides:
    pod_env.use(world.token("alpha"))
    name, base = conformance_dataset
    return Sides(s3.client(), boto3.client("s3"), BUCKET, base, name)


def _error(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return response["ResponseMetadata"]["HTTPStatusCode"], response["Error"]["Code"]


# -- ListObjectsV2 ---------------------------------------------------------------------

LIST_CASES: list[tuple[str, dict[str, Any]]] = [
    ("ListObjectsV2-all-keys-in-UTF-8-binary-order", {}),
    ("ListObjectsV2-Prefix-filters-keys", {"Prefix": "b/"}),
    ("ListObjectsV2-Prefix-not-ending-in-delimiter", {"Prefix": "b/s"}),
    ("ListObjectsV2-Delimiter-rolls-up-CommonPrefixes", {"Delimiter": "/"}),
    ("ListObjectsV2-Prefix-and-Delimiter", {"Prefix": "b/", "Delimiter": "/"}),
    ("ListObjectsV2-Prefix-naming-one-object", {"Prefix": "a.txt"}),
    ("ListObjectsV2-MaxKeys-truncates-IsTruncated-true", {"MaxKeys": 3}),
    ("ListObjectsV2-MaxKeys-counts-CommonPrefixes", {"MaxKeys": 2, "Delimiter": "/"}),
    ("ListObjectsV2-StartAfter-excludes-that-key", {"StartAfter": "b/d e.txt"}),
    ("ListObjectsV2-StartAfter-between-keys", {"StartAfter": "b/m"}),
    ("ListObjectsV2-StartAfter-past-the-last-key-empty", {"StartAfter": "zz"}),
    ("ListObjectsV2-StartAfter-with-Delimiter", {"StartAfter": "a.txt", "Delimiter": "/"}),
    ("ListObjectsV2-unicode-Prefix", {"Prefix": "b/\u00fc"}),
    ("ListObjectsV2-plus-in-Prefix-is-literal", {"Prefix": "b/x+"}),
    ("ListObjectsV2-space-in-Prefix", {"Prefix": "b/d e"}),
    ("ListObjectsV2-empty-result-KeyCount-0", {"Prefix": "nothing/"}),
    ("ListObjectsV2-EncodingType-url-encodes-keys", {"EncodingType": "url"}),
    (
        "ListObjectsV2-EncodingType-url-encodes-prefixes",
        {"EncodingType": "url", "Prefix": "b/", "Delimiter": "/"},
    ),
    ("ListObjectsV2-FetchOwner-false-no-Owner", {"Prefix": "a"}),
    ("ListObjectsV2-MaxKeys-0-empty", {"MaxKeys": 0}),
]


def _listing(response: dict[str, Any], base: str) -> dict[str, Any]:
    """What a client reads from a ListObjectsV2 answer, with the dataset prefix removed."""

    def strip(value: str) -> str:
        if response.get("EncodingType") == "url":
            value = unquote_plus(value)  # as botocore decodes it (handlers.py)
        return value[len(base) :] if value.startswith(base) else "<outside " + value + ">"

    out = {
        "Contents": [
            (strip(o["Key"]), o["Size"], o["ETag"], o["StorageClass"], "LastModified" in o)
            for o in response.get("Contents", [])
        ],
        "CommonPrefixes": [strip(p["Prefix"]) for p in response.get("CommonPrefixes", [])],
        "IsTruncated": response["IsTruncated"],
        "KeyCount": response["KeyCount"],
        "MaxKeys": response["MaxKeys"],
        "Delimiter": response.get("Delimiter"),
        "EncodingType": response.get("EncodingType"),
        "Owner": [o.get("Owner") for o in response.get("Contents", []) if "Owner" in o],
        "HasNextToken": "NextContinuationToken" in response,
    }
    prefix = response.get("Prefix")
    out["Prefix"] = strip(prefix) if prefix else ""
    start = response.get("StartAfter")
    out["StartAfter"] = strip(start) if start else None
    return out


def _to_store(kwargs: dict[str, Any], base: str) -> dict[str, Any]:
    store = dict(kwargs)
    store["Prefix"] = base + kwargs.get("Prefix", "")
    if "StartAfter" in kwargs:
        store["StartAfter"] = base + kwargs["StartAfter"]
    return store


@pytest.mark.parametrize("kwargs", [c[1] for c in LIST_CASES], ids=[c[0] for c in LIST_CASES])
def test_list_objects_v2_matches_s3(sides: Sides, kwargs: dict[str, Any]) -> None:
    direct = sides.minio.list_objects_v2(Bucket=sides.bucket, **_to_store(kwargs, sides.base))
    through = sides.gateway.list_objects_v2(Bucket=sides.dataset, **kwargs)
    assert _listing(through, "") == _listing(direct, sides.base)


PAGE_CASES: list[tuple[str, dict[str, Any]]] = [
    ("ListObjectsV2-ContinuationToken-pages-until-IsTruncated-false", {"MaxKeys": 2}),
    (
        "ListObjectsV2-ContinuationToken-pages-with-Delimiter",
        {"MaxKeys": 1, "Delimiter": "/", "Prefix": "b/"},
    ),
    ("ListObjectsV2-ContinuationToken-with-StartAfter", {"MaxKeys": 2, "StartAfter": "b/"}),
    ("ListObjectsV2-ContinuationToken-MaxKeys-1-whole-tree", {"MaxKeys": 1}),
]


def _pages(call: Callable[..., dict[str, Any]], kwargs: dict[str, Any], base: str) -> list[Any]:
    """Every page until IsTruncated is false. A page that ends exactly at the last key
    may say IsTruncated and be followed by one empty page (MinIO does; S3 allows it, and
    paginators handle it): that empty page is dropped and the one before is the last."""
    pages: list[Any] = []
    token: str | None = None
    for _ in range(len(KEYS) + 3):
        response = call(**kwargs, **({"ContinuationToken": token} if token else {}))
        page = _listing(response, base)
        page.pop("HasNextToken")
        if not response["IsTruncated"]:
            assert "NextContinuationToken" not in response
            if pages and page["KeyCount"] == 0:
                pages[-1]["IsTruncated"] = False
            else:
                pages.append(page)
            return pages
        pages.append(page)
        token = response["NextContinuationToken"]
        assert token
    raise AssertionError("the listing never ended")


@pytest.mark.parametrize("kwargs", [c[1] for c in PAGE_CASES], ids=[c[0] for c in PAGE_CASES])
def test_list_objects_v2_paging_matches_s3(sides: Sides, kwargs: dict[str, Any]) -> None:
    direct = _pages(
        lambda **kw: sides.minio.list_objects_v2(Bucket=sides.bucket, **kw),
        _to_store(kwargs, sides.base),
        sides.base,
    )
    through = _pages(
        lambda **kw: sides.gateway.list_objects_v2(Bucket=sides.dataset, **kw), kwargs, ""
    )
    assert through == direct


def test_list_objects_v2_max_keys_above_the_cap(sides: Sides) -> None:
    """ListObjectsV2 MaxKeys above 1000: at most 1000 keys a page on both. Intended
    difference: MinIO echoes the MaxKeys asked for, the gateway the one it applied."""
    direct = _listing(
        sides.minio.list_objects_v2(Bucket=sides.bucket, Prefix=sides.base, MaxKeys=5000),
        sides.base,
    )
    through = _listing(sides.gateway.list_objects_v2(Bucket=sides.dataset, MaxKeys=5000), "")
    assert direct.pop("MaxKeys") == 5000
    assert through.pop("MaxKeys") <= 1000
    assert through == direct


def test_list_objects_v2_delimiter_other_than_slash_is_refused(sides: Sides) -> None:
    """Intended difference: only '/' is offered as a delimiter (S3 takes any string)."""
    assert _error(lambda: sides.gateway.list_objects_v2(Bucket=sides.dataset, Delimiter="e")) == (
        400,
        "InvalidArgument",
    )
    assert "CommonPrefixes" in sides.minio.list_objects_v2(
        Bucket=sides.bucket, Prefix=sides.base, Delimiter="e"
    )


def test_list_objects_v2_url_encoding_decodes_like_s3(sides: Sides) -> None:
    """ListObjectsV2 EncodingType=url: keys come back encoded, '+' as %2B (a literal
    plus) and a space as '+' or %20, both of which S3 clients decode (unquote_plus).
    Intended difference: the gateway writes a space as %20 and leaves '~' as is."""
    through = sides.gateway.list_objects_v2(Bucket=sides.dataset, Prefix="b/", EncodingType="url")
    raw = [o["Key"] for o in through["Contents"]]
    assert "b/x%2By.txt" in raw
    assert "b/d%20e.txt" in raw
    assert "b/%C3%BCber.txt" in raw
    direct = sides.minio.list_objects_v2(
        Bucket=sides.bucket, Prefix=sides.base + "b/", EncodingType="url"
    )
    assert [unquote_plus(k) for k in raw] == [
        unquote_plus(o["Key"])[len(sides.base) :] for o in direct["Contents"]
    ]


# -- ListBuckets -----------------------------------------------------------------------


def test_list_buckets_has_the_shape_of_s3_and_lists_grants(sides: Sides, world: World) -> None:
    """ListBuckets: same shape (Buckets with Name and CreationDate, Owner); intended
    difference: the content is the sandbox's granted datasets and ``outbox``."""
    direct = sides.minio.list_buckets()
    through = sides.gateway.list_buckets()
    for answer in (direct, through):
        assert set(answer) >= {"Buckets", "Owner"}
        for bucket in answer["Buckets"]:
            assert isinstance(bucket["Name"], str)
            assert isinstance(bucket["CreationDate"], dt.datetime)
    assert sorted(b["Name"] for b in through["Buckets"]) == sorted(
        [world.claims, sides.dataset, "outbox"]
    )
    assert BUCKET in {b["Name"] for b in direct["Buckets"]}


# -- HeadObject / GetObject ------------------------------------------------------------

OBJECT_KEYS = ["a.txt", "b/d e.txt", "b/\u00fcber.txt", "b/x+y.txt", "b/sub/zz/y.txt", "empty.bin"]


@pytest.mark.parametrize(
    "key", OBJECT_KEYS, ids=[f"HeadObject-GetObject-{k!r}" for k in OBJECT_KEYS]
)
def test_head_and_get_object_match_s3(sides: Sides, key: str) -> None:
    """HeadObject: ContentLength, ETag, LastModified, Content-Type; GetObject: 200, body."""
    direct = sides.minio.head_object(Bucket=sides.bucket, Key=sides.base + key)
    through = sides.gateway.head_object(Bucket=sides.dataset, Key=key)
    for name in ("ContentLength", "ETag", "LastModified", "AcceptRanges"):
        assert through.get(name) == direct.get(name), name
    got = sides.gateway.get_object(Bucket=sides.dataset, Key=key)
    want = sides.minio.get_object(Bucket=sides.bucket, Key=sides.base + key)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "ContentRange" not in got
    assert got["Body"].read() == want["Body"].read() == KEYS[key]
    assert got["ContentLength"] == want["ContentLength"]
    assert got["ETag"] == want["ETag"]


def test_percent_escape_in_key_is_refused(sides: Sides) -> None:
    """Intended difference: a key holding a percent-escape (``%20``) is refused as a
    double-encoding path trick (400 InvalidArgument), though S3 serves it; it is still
    listed, and paging past it works."""
    key = "b/p%20q&r~s.txt"
    assert sides.minio.head_object(Bucket=sides.bucket, Key=sides.base + key)["ContentLength"]
    assert _error(lambda: sides.gateway.get_object(Bucket=sides.dataset, Key=key)) == (
        400,
        "InvalidArgument",
    )
    listed = sides.gateway.list_objects_v2(Bucket=sides.dataset, Prefix="b/p")
    assert [o["Key"] for o in listed["Contents"]] == [key]
    after = sides.gateway.list_objects_v2(Bucket=sides.dataset, Prefix="b/", StartAfter=key)
    assert after["Contents"][0]["Key"] == "b/sub/z.txt"


RANGE_CASES: list[tuple[str, str, str]] = [
    ("GetObject-Range-bytes=a-b-206", "big.bin", "bytes=100-199"),
    ("GetObject-Range-first-byte", "big.bin", "bytes=0-0"),
    ("GetObject-Range-bytes=a--to-the-end", "big.bin", "bytes=9000-"),
    ("GetObject-Range-bytes=-n-suffix", "big.bin", "bytes=-500"),
    ("GetObject-Range-suffix-longer-than-object-whole", "big.bin", "bytes=-20000"),
    ("GetObject-Range-last-past-the-end-clipped", "big.bin", f"bytes=9990-{BIG + 500}"),
    ("GetObject-Range-last-byte", "big.bin", f"bytes={BIG - 1}-{BIG - 1}"),
    ("GetObject-Range-first-past-the-end-416-InvalidRange", "big.bin", f"bytes={BIG}-"),
    ("GetObject-Range-far-past-the-end-416", "big.bin", f"bytes={BIG + 10}-{BIG + 20}"),
    ("GetObject-Range-on-empty-object-416", "empty.bin", "bytes=0-0"),
    ("GetObject-Range-small-object", "a.txt", "bytes=1-3"),
    ("GetObject-Range-end-before-start-as-MinIO-416", "big.bin", "bytes=5-2"),
    ("GetObject-Range-unknown-unit-ignored-200-RFC9110", "big.bin", "items=0-5"),
    ("GetObject-Range-several-ranges-ignored-200", "big.bin", "bytes=0-1,5-6"),
]


def _ranged(call: Callable[[], dict[str, Any]]) -> tuple[Any, ...]:
    try:
        r = call()
    except ClientError as exc:
        e = exc.response
        return ("error", e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Code"])
    return (
        r["ResponseMetadata"]["HTTPStatusCode"],
        r.get("ContentRange"),
        r["ContentLength"],
        r["Body"].read(),
        r.get("AcceptRanges"),
    )


@pytest.mark.parametrize(
    ("key", "byte_range"), [c[1:] for c in RANGE_CASES], ids=[c[0] for c in RANGE_CASES]
)
def test_get_object_range_matches_s3(sides: Sides, key: str, byte_range: str) -> None:
    direct = _ranged(
        lambda: sides.minio.get_object(Bucket=sides.bucket, Key=sides.base + key, Range=byte_range)
    )
    through = _ranged(
        lambda: sides.gateway.get_object(Bucket=sides.dataset, Key=key, Range=byte_range)
    )
    assert through == direct


def _head(call: Callable[[], dict[str, Any]]) -> tuple[Any, ...]:
    try:
        r = call()
    except ClientError as exc:
        return ("error", exc.response["ResponseMetadata"]["HTTPStatusCode"])
    return (r["ResponseMetadata"]["HTTPStatusCode"], r.get("ContentRange"), r["ContentLength"])


@pytest.mark.parametrize(
    "byte_range", ["bytes=0-9", "bytes=-5", f"bytes={BIG}-"], ids=lambda r: f"HeadObject-Range-{r}"
)
def test_head_object_range_matches_s3(sides: Sides, byte_range: str) -> None:
    direct = _head(
        lambda: sides.minio.head_object(
            Bucket=sides.bucket, Key=sides.base + "big.bin", Range=byte_range
        )
    )
    through = _head(
        lambda: sides.gateway.head_object(Bucket=sides.dataset, Key="big.bin", Range=byte_range)
    )
    assert through == direct


def test_head_object_range_is_logged_before_the_answer(
    sides: Sides, audit_sink: SwitchableSink
) -> None:
    """The audit contract holds for a ranged HeadObject too: one record, with its range."""
    start = audit_sink.size
    sides.gateway.head_object(Bucket=sides.dataset, Key="big.bin", Range="bytes=0-9")
    (entry,) = [
        e
        for e in audit_sink.entries_since(start)
        if e.action == "dataset.read" and e.details.get("key") == "big.bin"
    ]
    assert entry.details["range"] == "bytes=0-9"
    assert entry.details["status"] == 206


@pytest.mark.parametrize("header", ["IfMatch", "IfNoneMatch"])
def test_get_object_conditional_matches_s3(sides: Sides, header: str) -> None:
    """GetObject If-Match (an other ETag: 412) and If-None-Match (its ETag: 304); the
    full set of conditional cases is in test_conditional.py."""
    etag = sides.minio.head_object(Bucket=sides.bucket, Key=sides.base + "a.txt")["ETag"]
    value = '"' + "0" * 32 + '"' if header == "IfMatch" else etag
    direct = _head(
        lambda: sides.minio.get_object(
            Bucket=sides.bucket, Key=sides.base + "a.txt", **{header: value}
        )
    )
    through = _head(
        lambda: sides.gateway.get_object(Bucket=sides.dataset, Key="a.txt", **{header: value})
    )
    assert direct[0] == "error"
    assert through == direct


# -- Errors ----------------------------------------------------------------------------


def test_errors_match_s3(sides: Sides) -> None:
    """GetObject/HeadObject of a missing key: 404 NoSuchKey (HEAD: no body, so "404");
    a bucket that does not exist: NoSuchBucket."""
    missing = "b/missing.txt"
    cases: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        (
            "GetObject-NoSuchKey-404",
            lambda: sides.minio.get_object(Bucket=sides.bucket, Key=sides.base + missing),
            lambda: sides.gateway.get_object(Bucket=sides.dataset, Key=missing),
        ),
        (
            "HeadObject-missing-404",
            lambda: sides.minio.head_object(Bucket=sides.bucket, Key=sides.base + missing),
            lambda: sides.gateway.head_object(Bucket=sides.dataset, Key=missing),
        ),
    ]
    for case, direct, through in cases:
        assert _error(through) == _error(direct), case


def test_unknown_bucket_is_access_denied(sides: Sides) -> None:
    """S3 answers NoSuchBucket (404) for a bucket that does not exist. Intended
    difference: the gateway answers AccessDenied (403) for every bucket the sandbox is
    not granted, so that a sandbox cannot learn which datasets exist."""
    name = "no-such-bucket-x1"
    for client, answer in (
        (sides.minio, (404, "NoSuchBucket")),
        (sides.gateway, (403, "AccessDenied")),
    ):
        assert _error(lambda c=client: c.get_object(Bucket=name, Key="k")) == answer
        assert _error(lambda c=client: c.list_objects_v2(Bucket=name)) == answer


# -- Multipart (MinIO: a scratch bucket; the gateway: the sandbox's outbox) -------------


@pytest.fixture(scope="module")
def scratch(s3: MinioServer) -> str:
    name = f"conf-scratch-{secrets.token_hex(3)}"
    s3.client().create_bucket(Bucket=name)
    return name


@dataclass(frozen=True)
class Upload:
    """One multipart upload on one side."""

    client: Any
    bucket: str
    key: str
    upload_id: str

    def part(self, number: int, body: bytes) -> str:
        r = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )
        return str(r["ETag"])

    def complete(self, parts: list[tuple[int, str]]) -> dict[str, Any]:
        return dict(
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
            )
        )

    def abort(self) -> None:
        self.client.abort_multipart_upload(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
        )


def _both(sides: Sides, scratch: str, name: str) -> tuple[Upload, Upload]:
    key = f"models/conf-{name}-{secrets.token_hex(3)}.bin"
    direct = sides.minio.create_multipart_upload(Bucket=scratch, Key=key)
    through = sides.gateway.create_multipart_upload(Bucket="outbox", Key=key)
    assert (through["Bucket"], through["Key"]) == ("outbox", key)
    assert through["UploadId"]
    return (
        Upload(sides.minio, scratch, key, direct["UploadId"]),
        Upload(sides.gateway, "outbox", key, through["UploadId"]),
    )


def _stored(s3: MinioServer, world: World, key: str) -> bytes:
    outbox_key = f"{sandbox_id(world.tenant, 'alpha')}/outbox/{key}"
    return bytes(s3.client().get_object(Bucket=OUTBOX, Key=outbox_key)["Body"].read())


def test_multipart_out_of_order_parts_complete_in_order(
    sides: Sides, scratch: str, s3: MinioServer, world: World
) -> None:
    """UploadPart in any order; CompleteMultipartUpload lists them ascending; the object
    is the parts in part-number order. Intended difference: the gateway's part ETag is
    SHA-256-based (32 hex digits, quoted) where MinIO's is the part's MD5."""
    first, last = os.urandom(5 * MIB), os.urandom(1234)
    for side in _both(sides, scratch, "order"):
        tag2 = side.part(2, last)
        tag1 = side.part(1, first)
        for tag in (tag1, tag2):
            assert re.fullmatch(r'"[0-9a-f]{32}"', tag)
        done = side.complete([(1, tag1), (2, tag2)])
        assert done["Key"] == side.key
        assert done["ETag"]
        if side.bucket == "outbox":
            assert _stored(s3, world, side.key) == first + last
        else:
            body = side.client.get_object(Bucket=side.bucket, Key=side.key)["Body"].read()
            assert body == first + last


MULTIPART_ERRORS = [
    "CompleteMultipartUpload-wrong-ETag-InvalidPart",
    "CompleteMultipartUpload-part-not-uploaded-InvalidPart",
    "CompleteMultipartUpload-descending-InvalidPartOrder",
    "CompleteMultipartUpload-small-part-not-last-EntityTooSmall",
    "AbortMultipartUpload-then-Complete-NoSuchUpload",
]


@pytest.mark.parametrize("case", MULTIPART_ERRORS)
def test_multipart_errors_match_s3(sides: Sides, scratch: str, case: str) -> None:
    answers = []
    for side in _both(sides, scratch, case.split("-", 1)[1][:20].lower()):
        small = b"x" * 100
        if case.endswith("EntityTooSmall"):
            tags = [(1, side.part(1, small)), (2, side.part(2, small))]
        else:
            tags = [(1, side.part(1, os.urandom(5 * MIB))), (2, side.part(2, small))]
        if "wrong-ETag" in case:
            tags[1] = (2, '"' + "0" * 32 + '"')
        elif "not-uploaded" in case:
            tags.append((3, tags[1][1]))
        elif "descending" in case:
            tags.reverse()
        elif "Abort" in case:
            side.abort()
        answers.append(_error(lambda side=side, tags=tags: side.complete(tags)))  # type: ignore[misc]
        with contextlib.suppress(ClientError):
            side.abort()
    direct, through = answers
    assert through == direct


def test_upload_part_after_abort_is_no_such_upload(sides: Sides, scratch: str) -> None:
    """UploadPart into an aborted upload: 404 NoSuchUpload on both."""
    answers = []
    for side in _both(sides, scratch, "part-after-abort"):
        side.abort()
        answers.append(_error(lambda side=side: side.part(1, b"late")))  # type: ignore[misc]
    direct, through = answers
    assert direct == (404, "NoSuchUpload")
    assert through == direct
