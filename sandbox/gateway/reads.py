"""Dataset reads: listings, HEAD and GET of objects, each logged before it is answered.

HEAD, listings and reads that fit in one chunk are logged in one record written before
any byte is sent; a larger read writes a ``started`` record and is then streamed by
:class:`~sandbox.gateway.streaming.AuditedStream`, which writes the ``completed`` one.

A conditional HEAD or GET (:mod:`sandbox.gateway.preconditions`) whose condition is
false sends no byte of the object and is logged like the other reads that send none (a
missing object, a range outside it): a ``refused`` record with outcome ``failure``,
``allow: true``, the status (412 or 304), the reason (``PreconditionFailed`` or
``NotModified``) and the ETag the condition was evaluated against.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from email.utils import format_datetime
from typing import Any

from fastapi.responses import JSONResponse, Response

from sandbox.api.dataset import DatasetLocation
from sandbox.gateway.gateway import Gateway, to_thread
from sandbox.gateway.objectkeys import (
    dataset_prefix,
    storage_key,
    validate_key,
    validate_listing_prefix,
)
from sandbox.gateway.preconditions import NotModified, PreconditionFailed, Preconditions
from sandbox.gateway.records import RequestRecord
from sandbox.gateway.refusals import REFUSALS, response_headers
from sandbox.gateway.s3 import ByteRange, ObjectStream, StorageUnavailable, parse_range
from sandbox.gateway.streaming import AuditedStream, object_headers
from sandbox.gateway.wire import ObjectEntry, ObjectList

__all__ = ["condition_false", "get_object", "head_object", "list_objects"]

_OCTETS = "application/octet-stream"


async def list_objects(
    gw: Gateway,
    record: RequestRecord,
    raw_path: bytes,
    credentials: str | None,
    *,
    prefix: str,
    after: str | None,
    limit: int,
) -> Response:
    """One page of the dataset's objects in key order, relative to the dataset."""
    try:
        grant = await gw.admit_read(record, raw_path, credentials)
        validate_listing_prefix(prefix)
        if after is not None:
            validate_key(after)
        base = dataset_prefix(grant.location.prefix)
        rows, truncated = await to_thread(
            gw.storage.list,
            grant.location,
            base + prefix,
            base + after if after else None,
            min(limit, gw.list_max_keys),
        )
    except REFUSALS as exc:
        return await gw.refuse(record, exc)
    page = _page(record.name, prefix, base, rows, truncated)
    event = record.event(
        "success",
        "list",
        status=200,
        allow=True,
        count=len(page.objects),
        truncated=truncated,
    )
    return await gw.log_then(
        record,
        event,
        lambda: JSONResponse(
            page.model_dump(mode="json", by_alias=True), headers=response_headers(record, 200)
        ),
    )


def _page(
    dataset: str, prefix: str, base: str, rows: list[dict[str, Any]], truncated: bool
) -> ObjectList:
    """S3's listing rows as a page of dataset-relative keys."""
    objects = [
        ObjectEntry(
            key=str(r["Key"])[len(base) :],
            size=int(r.get("Size", 0)),
            etag=str(r.get("ETag", "")),
            last_modified=r.get("LastModified"),
        )
        for r in rows
        if str(r.get("Key", "")).startswith(base)
    ]
    return ObjectList(
        dataset=dataset,
        prefix=prefix,
        objects=objects,
        truncated=truncated,
        next_after=objects[-1].key if truncated and objects else None,
    )


async def head_object(
    gw: Gateway,
    record: RequestRecord,
    raw_path: bytes,
    credentials: str | None,
    key: str,
    *,
    conditions: Preconditions | None = None,
) -> Response:
    """Size, ETag and Last-Modified of an object, with no body (304 or 412 when one of
    ``conditions`` is false)."""
    try:
        grant = await gw.admit_read(record, raw_path, credentials)
        full = storage_key(grant.location.prefix, key)
        info = await to_thread(gw.storage.head, grant.location, full, conditions)
    except (PreconditionFailed, NotModified) as exc:
        return await condition_false(gw, record, exc)
    except REFUSALS as exc:
        return await gw.refuse(record, exc)
    headers = {
        **response_headers(record, 200),
        **object_headers(info.size, info.etag, info.last_modified),
    }
    event = record.event("success", "head", status=200, allow=True, bytes=0, object_size=info.size)
    return await gw.log_then(
        record, event, lambda: Response(status_code=200, headers=headers, media_type=_OCTETS)
    )


async def get_object(
    gw: Gateway,
    record: RequestRecord,
    raw_path: bytes,
    credentials: str | None,
    key: str,
    range_header: str | None,
    *,
    conditions: Preconditions | None = None,
) -> Response:
    """The object's bytes (or one range); logged with count and SHA-256 before completing.

    With ``conditions``, only a version that satisfies them is sent (304 or 412 else).
    """
    try:
        grant = await gw.admit_read(record, raw_path, credentials)
        full = storage_key(grant.location.prefix, key)
        byte_range = parse_range(range_header)
        stream, small = await to_thread(
            _open_object, gw, grant.location, full, byte_range, conditions
        )
    except (PreconditionFailed, NotModified) as exc:
        return await condition_false(gw, record, exc)
    except REFUSALS as exc:
        return await gw.refuse(record, exc)
    status = 206 if stream.content_range else 200
    headers = {
        **response_headers(record, status),
        **object_headers(stream, stream.etag, stream.last_modified),
    }
    whole = stream.content_range is None  # also a Range ignored for a false If-Range
    if whole and byte_range is not None:
        # The Range was ignored (If-Range names another version): the entry records
        # what is sent, the whole object, not the range asked for — as the S3 surface
        # does for a Range of an unknown unit.
        record.byte_range = None
    if small is None:
        return await _streamed(gw, record, stream, headers, status, whole)
    if isinstance(small, StorageUnavailable):
        return await gw.refuse(record, small)
    details: dict[str, Any] = {
        "bytes": len(small),
        "sha256": hashlib.sha256(small).hexdigest(),
        "whole_object": whole,
        "object_size": stream.size,
        "etag": stream.etag,
    }
    event = record.event("success", "read", status=status, allow=True, **details)
    return await gw.log_then(
        record,
        event,
        lambda: Response(small, status_code=status, headers=headers, media_type=_OCTETS),
    )


async def condition_false(
    gw: Gateway, record: RequestRecord, exc: PreconditionFailed | NotModified
) -> Response:
    """Log a read whose condition is false as refused, then answer 412 or a bodiless
    304 carrying the version's ETag and Last-Modified (RFC 9110 §15.4.5)."""
    extra: dict[str, Any] = {"bytes": 0}
    if exc.etag:
        extra["etag"] = exc.etag
    answer = await gw.refuse(record, exc, **extra)
    if answer.status_code != 304:
        return answer  # 412, or 503 if the refusal could not be logged
    headers = {
        k: v for k, v in answer.headers.items() if k.lower() in ("x-request-id", "cache-control")
    }
    if exc.etag:
        headers["ETag"] = exc.etag
    if exc.last_modified is not None and exc.last_modified.tzinfo is not None:
        when = exc.last_modified.astimezone(dt.UTC)
        headers["Last-Modified"] = format_datetime(when, usegmt=True)
    return Response(status_code=304, headers=headers)


def _open_object(
    gw: Gateway,
    location: DatasetLocation,
    full: str,
    byte_range: ByteRange | None,
    conditions: Preconditions | None,
) -> tuple[ObjectStream, bytes | StorageUnavailable | None]:
    """Open the object; one that fits in a chunk is read (and closed) at once.

    Returns the stream and, for a small object, its bytes or the read's failure
    (``None`` for an object to be streamed), so a small read is one thread hop.
    """
    stream = gw.storage.open(location, full, byte_range, conditions)
    if stream.length > gw.chunk_bytes:
        return stream, None
    try:
        data = stream.read(stream.length)
        if len(data) != stream.length:
            raise StorageUnavailable(f"storage sent {len(data)} of {stream.length} bytes")
    except StorageUnavailable as exc:
        return stream, exc
    finally:
        stream.close()
    return stream, data


async def _streamed(
    gw: Gateway,
    record: RequestRecord,
    stream: ObjectStream,
    headers: dict[str, str],
    status: int,
    whole: bool,
) -> Response:
    """Log the ``started`` record, then hand the stream to :class:`AuditedStream`."""
    started = record.event(
        "success",
        "started",
        status=status,
        allow=True,
        object_size=stream.size,
        length=stream.length,
        etag=stream.etag,
    )
    if not await gw.append(record, started):
        stream.close()
        return gw.unavailable(record)
    return AuditedStream(
        gw.audit, record, stream, headers, status, whole=whole, chunk_bytes=gw.chunk_bytes
    )
