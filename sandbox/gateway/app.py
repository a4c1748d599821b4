"""The gateway's HTTP API (FastAPI), published at ``/openapi.json``.

- ``GET  /v1/datasets/{dataset}/objects``        list objects (``prefix``, ``after``, ``limit``)
- ``HEAD /v1/datasets/{dataset}/objects/{key}``  object metadata
- ``GET  /v1/datasets/{dataset}/objects/{key}``  object bytes, streamed, one ``Range``
- ``PUT  /v1/outbox/{path}``                     write an artifact into the sandbox's outbox
- ``GET  /healthz``                              liveness

Every dataset request, allowed or not, is logged in the audit log before its response
completes (see :mod:`sandbox.gateway.records` for the entry shape):

- refusals (401, 400, 403, 404, 416, 502, 503) are logged, then answered;
- HEAD, listings and reads that fit in one chunk are logged in one record written
  before any byte is sent;
- larger reads write a ``started`` record before the first byte and a ``completed``
  record (bytes, SHA-256) after the last chunk has been read from storage but before it
  is sent. If that final append fails the gateway aborts the connection, so the client
  sees a body shorter than its Content-Length and never a complete, unlogged response.

If the audit log refuses any record written before the response starts, the answer is
503 and no data is sent.

An outbox write (see :mod:`sandbox.gateway.outbox`) goes into the outbox of the sandbox
the token belongs to, never one the request names. Its body is streamed to S3 as it
arrives (413 once it passes the limit, nothing kept); it is logged with its size and
SHA-256 once received and before it is committed, so if the audit log refuses that
record the answer is 503 and nothing was stored. An existing artifact is never
replaced (409).
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import anyio
import structlog
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from audit.client import AuditSink, AuditUnavailable
from sandbox import __version__
from sandbox.api.dataset import DatasetLocation
from sandbox.errors import SandboxError
from sandbox.gateway.auth import Identity, ReviewUnavailable, TokenReviewer, Unauthenticated
from sandbox.gateway.authz import (
    Forbidden,
    Grant,
    GrantResolver,
    LookupUnavailable,
    NotCached,
    SandboxRef,
)
from sandbox.gateway.keys import (
    InvalidKey,
    check_raw_path,
    dataset_prefix,
    storage_key,
    validate_key,
    validate_listing_prefix,
)
from sandbox.gateway.outbox import (
    ArtifactExists,
    ArtifactTooLarge,
    EmptyArtifact,
    OutboxNotConfigured,
    OutboxWriter,
    TooManyWrites,
    Upload,
    validate_artifact_path,
)
from sandbox.gateway.records import Outcome, RequestRecord
from sandbox.gateway.storage import (
    ByteRange,
    EndpointNotAllowed,
    ObjectNotFound,
    ObjectStream,
    RangeNotSatisfiable,
    Storage,
    StorageUnavailable,
    parse_range,
)

__all__ = [
    "ArtifactWritten",
    "ErrorBody",
    "Gateway",
    "ObjectEntry",
    "ObjectList",
    "StreamAborted",
    "create_app",
]

_log = structlog.get_logger("regsandbox.gateway")
_T = TypeVar("_T")
_bearer = HTTPBearer(auto_error=False, description="Projected ServiceAccount token.")
Token = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
DatasetName = Annotated[str, Path(description="Dataset name.", max_length=253)]
_DATASET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass
class Gateway:
    """What the HTTP layer needs: the checks, the storage and the audit log."""

    reviewer: TokenReviewer
    """Authenticates bearer tokens."""
    grants: GrantResolver
    """Decides whether the token's sandbox may read a dataset."""
    storage: Storage
    """Reads objects."""
    audit: AuditSink
    """Where every request is recorded, durably."""
    chunk_bytes: int = 1024 * 1024
    """Streaming chunk size; reads up to this size are logged in one record."""
    list_max_keys: int = 1000
    """Largest listing page."""
    outbox: OutboxWriter | None = None
    """Writes artifacts into sandbox outboxes; None: writes are refused (503)."""
    outbox_max_writes: int = 8
    """Most writes held at once; more are refused with 429."""
    _writes: int = field(default=0, init=False, repr=False)

    @property
    def writes_under_way(self) -> int:
        """Outbox writes holding a slot now (touched only on the event loop: no lock)."""
        return self._writes


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorBody(_Wire):
    """Why a request was refused."""

    detail: str
    """What went wrong, for a person."""
    reason: str
    """CamelCase code, e.g. ``DatasetNotGranted``."""
    request_id: str
    """Id of the request in the audit log and the gateway's logs."""


class ObjectEntry(_Wire):
    """One object of a listing."""

    key: str
    """Key relative to the dataset."""
    size: int
    """Size in bytes."""
    etag: str
    """S3 ETag."""
    last_modified: datetime | None = None
    """When the object was last written."""


class ObjectList(_Wire):
    """One page of a dataset listing."""

    dataset: str
    """Dataset name."""
    prefix: str
    """The filter that was applied, relative to the dataset."""
    objects: list[ObjectEntry]
    """Objects in key order."""
    truncated: bool
    """Whether more objects follow; ask again with ``after=nextAfter``."""
    next_after: str | None = None
    """Key to pass as ``after`` for the next page."""


class ArtifactWritten(_Wire):
    """An artifact stored in the sandbox's outbox, ready to be named by a ModelExport."""

    path: str
    """The artifact path: ``spec.artifact.path`` of the ModelExport that exports it."""
    sandbox: str
    """The sandbox whose outbox holds it (the token's, never one the request names)."""
    size: int
    """Bytes stored."""
    sha256: str
    """Hex SHA-256 of the bytes; the export's ``status.sha256`` must be the same."""
    source: str
    """``s3://bucket/key`` of the object (the export's ``status.source``)."""
    request_id: str
    """Id of the write in the audit log and the gateway's logs."""


class StreamAborted(SandboxError):  # noqa: N818 - what happened to the stream
    """A streamed read was cut off (storage failed or the audit log refused the record)."""


# Refusal -> (HTTP status, outcome, whether authorisation had allowed the request).
def _classify(exc: Exception) -> tuple[int, Outcome, str, bool | None]:
    if isinstance(exc, Unauthenticated):
        return 401, "denied", exc.reason, False
    if isinstance(exc, InvalidKey):
        return 400, "denied", "InvalidKey", False
    if isinstance(exc, EmptyArtifact):
        return 400, "denied", "EmptyArtifact", False
    if isinstance(exc, ArtifactExists):
        return 409, "denied", "ArtifactExists", False
    if isinstance(exc, ArtifactTooLarge):
        return 413, "denied", "ArtifactTooLarge", False
    if isinstance(exc, TooManyWrites):
        return 429, "failure", "TooManyWrites", None
    if isinstance(exc, OutboxNotConfigured):
        return 503, "failure", "OutboxNotConfigured", None
    if isinstance(exc, Forbidden):
        return 403, "denied", exc.reason, False
    if isinstance(exc, EndpointNotAllowed):
        return 403, "denied", "EndpointNotAllowed", True
    if isinstance(exc, ObjectNotFound):
        return 404, "failure", "ObjectNotFound", True
    if isinstance(exc, RangeNotSatisfiable):
        return 416, "failure", "RangeNotSatisfiable", True
    if isinstance(exc, StorageUnavailable):
        return 502, "failure", "StorageUnavailable", True
    if isinstance(exc, ReviewUnavailable | LookupUnavailable):
        return 503, "failure", "KubernetesUnavailable", None
    raise exc


_REFUSALS: tuple[type[Exception], ...] = (
    Unauthenticated,
    InvalidKey,
    Forbidden,
    EndpointNotAllowed,
    ObjectNotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
    ReviewUnavailable,
    LookupUnavailable,
    EmptyArtifact,
    ArtifactExists,
    ArtifactTooLarge,
    OutboxNotConfigured,
    TooManyWrites,
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Invalid object key, prefix or dataset name."),
        (401, "Missing, malformed or unacceptable token."),
        (
            403,
            "Sandbox not Ready, expired, or dataset not granted; or the dataset's S3 "
            "endpoint is not one the gateway may use.",
        ),
        (502, "Object storage failed."),
        (503, "Kubernetes or the audit log unavailable; nothing was sent."),
    )
}


def _http_date(value: datetime | None) -> str | None:
    if value is None or value.tzinfo is None:
        return None
    return email.utils.format_datetime(value.astimezone(UTC), usegmt=True)


def _object_headers(
    stream_or_size: ObjectStream | int, etag: str, modified: datetime | None
) -> dict[str, str]:
    headers = {
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    if etag:
        headers["ETag"] = etag
    date = _http_date(modified)
    if date:
        headers["Last-Modified"] = date
    if isinstance(stream_or_size, ObjectStream):
        headers["Content-Length"] = str(stream_or_size.length)
        if stream_or_size.content_range:
            headers["Content-Range"] = stream_or_size.content_range
    else:
        headers["Content-Length"] = str(stream_or_size)
    return headers


class _AuditedStream(Response):
    """Streams an object, holding back the last chunk until the final record is durable."""

    def __init__(
        self,
        gateway: Gateway,
        record: RequestRecord,
        stream: ObjectStream,
        headers: dict[str, str],
        status_code: int,
        whole: bool,
    ) -> None:
        super().__init__(
            status_code=status_code, headers=headers, media_type="application/octet-stream"
        )
        self._gw = gateway
        self._record = record
        self._stream = stream
        self._whole = whole

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = anyio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(watch)
                try:
                    await self._send_body(send, gone)
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            self._stream.close()

    async def _finish(
        self, outcome: Outcome, status: int, reason: str | None, sent: int, digest: str | None
    ) -> None:
        details: dict[str, Any] = {
            "bytes": sent,
            "whole_object": self._whole,
            "object_size": self._stream.size,
        }
        if digest is not None:
            details["sha256"] = digest
        event = self._record.event(
            outcome, "completed", status=status, reason=reason, allow=True, **details
        )
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._gw.audit.append, [event])

    async def _send_body(self, send: Send, gone: anyio.Event) -> None:
        """Stream the body, reading (and hashing) the next chunk while this one is sent.

        A reader task fills a one-slot channel, so at most three chunks are in memory
        (one being read, one waiting, one being sent): memory stays flat, and storage
        reads and hashing overlap with the network.
        """
        stream, chunk_bytes = self._stream, self._gw.chunk_bytes
        hasher = hashlib.sha256()
        total, sent = stream.length, 0
        failure: list[BaseException] = []
        aborted = False

        def read(size: int) -> bytes:
            data = stream.read(size)
            hasher.update(data)  # hashlib releases the GIL on large buffers
            return data

        chunks_in, chunks_out = anyio.create_memory_object_stream[bytes](max_buffer_size=1)

        async def reader() -> None:
            got = 0
            async with chunks_in:
                try:
                    while got < total:
                        chunk = await anyio.to_thread.run_sync(read, min(chunk_bytes, total - got))
                        if not chunk:
                            raise StorageUnavailable(
                                f"storage ended the object after {got} of {total} bytes"
                            )
                        got += len(chunk)
                        await chunks_in.send(chunk)
                except (
                    StorageUnavailable,
                    anyio.BrokenResourceError,
                    anyio.ClosedResourceError,
                ) as exc:
                    failure.append(exc)

        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        try:
            async with anyio.create_task_group() as tasks, chunks_out:
                tasks.start_soon(reader)
                async for chunk in chunks_out:
                    last = sent + len(chunk) >= total
                    if gone.is_set():
                        break
                    if last:
                        try:
                            await self._finish(
                                "success", self.status_code, None, total, hasher.hexdigest()
                            )
                        except AuditUnavailable as exc:
                            _log.error(
                                "audit append failed; aborting stream",
                                request_id=self._record.request_id,
                                error=str(exc),
                            )
                            aborted = True
                            break
                    try:
                        await send(
                            {"type": "http.response.body", "body": chunk, "more_body": not last}
                        )
                    except OSError:
                        gone.set()
                        break
                    sent += len(chunk)
                    if last:
                        return
                tasks.cancel_scope.cancel()
            if aborted:  # raised outside the task group, so it is not wrapped in a group
                raise StreamAborted("the audit log refused the completion record")
            storage_failed = [f for f in failure if isinstance(f, StorageUnavailable)]
            if storage_failed and not gone.is_set():
                raise storage_failed[0]
        except StorageUnavailable as exc:
            _log.warning(
                "storage failed mid-stream", request_id=self._record.request_id, error=str(exc)
            )
            await self._finish_quietly("failure", 502, "StorageUnavailable", sent)
            raise StreamAborted(str(exc)) from None
        except BaseException:
            if sent < total:  # cancelled, or a bug: still record what was sent
                await self._finish_quietly("failure", self.status_code, "Aborted", sent)
            raise
        await self._finish_quietly("failure", self.status_code, "ClientDisconnected", sent)

    async def _finish_quietly(self, outcome: Outcome, status: int, reason: str, sent: int) -> None:
        try:
            await self._finish(outcome, status, reason, sent, None)
        except AuditUnavailable as exc:
            _log.error("audit append failed", request_id=self._record.request_id, error=str(exc))


def create_app(gateway: Gateway) -> FastAPI:
    """The gateway's FastAPI application."""
    app = FastAPI(
        title="regsandbox dataset gateway",
        version=__version__,
        description=(
            "Read granted datasets from inside a sandbox. Authenticate with a projected "
            "ServiceAccount token whose audience is the gateway's; every request is "
            "recorded in the audit log before its response completes."
        ),
    )

    async def thread(func: Callable[..., _T], *args: Any) -> _T:
        return await anyio.to_thread.run_sync(func, *args)

    def headers_for(record: RequestRecord, status: int) -> dict[str, str]:
        headers = {"X-Request-Id": record.request_id, "Cache-Control": "no-store"}
        if status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="regsandbox-gateway"'
        return headers

    def unavailable(record: RequestRecord, what: str = "nothing was sent") -> JSONResponse:
        body = ErrorBody(
            detail=f"the audit log is unavailable; {what}",
            reason="AuditUnavailable",
            request_id=record.request_id,
        )
        return JSONResponse(body.model_dump(by_alias=True), 503, headers=headers_for(record, 503))

    async def refuse(record: RequestRecord, exc: Exception, **extra: Any) -> Response:
        status, outcome, reason, allow = _classify(exc)
        if isinstance(exc, RangeNotSatisfiable) and exc.size is not None:
            extra["object_size"] = exc.size
        event = record.event(outcome, "refused", status=status, reason=reason, allow=allow, **extra)
        _log.info("refused", request_id=record.request_id, status=status, reason=reason)
        try:
            await thread(gateway.audit.append, [event])
        except AuditUnavailable as err:
            _log.error("audit append failed", request_id=record.request_id, error=str(err))
            return unavailable(record, "nothing was sent or stored")
        body = ErrorBody(detail=str(exc), reason=reason, request_id=record.request_id)
        headers = headers_for(record, status)
        if status == 429:
            headers["Retry-After"] = "5"
        if isinstance(exc, RangeNotSatisfiable) and exc.size is not None:
            headers["Content-Range"] = f"bytes */{exc.size}"
        return JSONResponse(body.model_dump(by_alias=True), status, headers=headers)

    async def log_then(
        record: RequestRecord, event_args: dict[str, Any], respond: Callable[[], Response]
    ) -> Response:
        event = record.event(**event_args)
        try:
            await thread(gateway.audit.append, [event])
        except AuditUnavailable as err:
            _log.error("audit append failed", request_id=record.request_id, error=str(err))
            return unavailable(record)
        return respond()

    async def authenticate(
        record: RequestRecord, request: Request, token: HTTPAuthorizationCredentials | None
    ) -> Identity:
        # Cache hits are answered on the event loop; only a real TokenReview or API read
        # goes to a worker thread (each hop costs latency under load).
        credentials = token.credentials if token else None
        identity = gateway.reviewer.cached(credentials)
        if identity is None:
            identity = await thread(gateway.reviewer.review, credentials)
        record.identity = identity
        check_raw_path(request.scope.get("raw_path") or b"")
        return identity

    async def admit(
        record: RequestRecord, request: Request, token: HTTPAuthorizationCredentials | None
    ) -> Grant:
        identity = await authenticate(record, request, token)
        if len(record.name) > 253 or not _DATASET_NAME.match(record.name):
            raise InvalidKey("invalid dataset name")
        try:
            try:
                grant = gateway.grants.authorize(identity.namespace, record.name, cached_only=True)
            except NotCached:
                grant = await thread(gateway.grants.authorize, identity.namespace, record.name)
        except Forbidden as exc:
            record.sandbox = exc.sandbox
            raise
        record.sandbox = grant.sandbox
        return grant

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        params = request.scope.get("path_params") or {}
        dataset = params.get("dataset")
        if isinstance(dataset, str) and request.url.path.startswith("/v1/datasets/"):
            key = params.get("key")
            record = RequestRecord(
                "dataset.list" if key is None else "dataset.read",
                request.method,
                dataset,
                key=key if isinstance(key, str) else None,
            )
            auth = request.headers.get("authorization", "")
            token = auth[7:] if auth[:7].lower() == "bearer " else None
            with contextlib.suppress(Unauthenticated, ReviewUnavailable):
                record.identity = await thread(gateway.reviewer.review, token)
            event = record.event(
                "denied", "refused", status=422, reason="InvalidRequest", allow=False
            )
            try:
                await thread(gateway.audit.append, [event])
            except AuditUnavailable:
                return unavailable(record)
        return await request_validation_exception_handler(request, exc)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/v1/datasets/{dataset}/objects",
        response_model=ObjectList,
        responses=_ERRORS,
        summary="List the objects of a granted dataset",
        operation_id="listObjects",
    )
    async def list_objects(
        request: Request,
        dataset: DatasetName,
        token: Token,
        prefix: Annotated[
            str, Query(max_length=1024, description="Only keys starting with this.")
        ] = "",
        after: Annotated[
            str | None, Query(max_length=1024, description="Start after this key.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="Most objects to return.")] = 1000,
    ) -> Response:
        """List objects in key order, relative to the dataset, a page at a time."""
        record = RequestRecord("dataset.list", "GET", dataset, key=prefix)
        try:
            grant = await admit(record, request, token)
            validate_listing_prefix(prefix)
            if after is not None:
                validate_key(after)
            base = dataset_prefix(grant.location.prefix)
            rows, truncated = await thread(
                gateway.storage.list,
                grant.location,
                base + prefix,
                base + after if after else None,
                min(limit, gateway.list_max_keys),
            )
        except _REFUSALS as exc:
            return await refuse(record, exc)
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
        page = ObjectList(
            dataset=dataset,
            prefix=prefix,
            objects=objects,
            truncated=truncated,
            next_after=objects[-1].key if truncated and objects else None,
        )
        return await log_then(
            record,
            {
                "outcome": "success",
                "phase": "list",
                "status": 200,
                "allow": True,
                "count": len(objects),
                "truncated": truncated,
            },
            lambda: JSONResponse(
                page.model_dump(mode="json", by_alias=True), headers=headers_for(record, 200)
            ),
        )

    object_path = "/v1/datasets/{dataset}/objects/{key:path}"

    @app.head(object_path, responses=_ERRORS, summary="Object metadata", operation_id="headObject")
    async def head_object(
        request: Request, dataset: DatasetName, key: str, token: Token
    ) -> Response:
        """Size, ETag and Last-Modified of an object, with no body."""
        record = RequestRecord("dataset.read", "HEAD", dataset, key=key)
        try:
            grant = await admit(record, request, token)
            full = storage_key(grant.location.prefix, key)
            info = await thread(gateway.storage.head, grant.location, full)
        except _REFUSALS as exc:
            return await refuse(record, exc)
        headers = {
            **headers_for(record, 200),
            **_object_headers(info.size, info.etag, info.last_modified),
        }
        return await log_then(
            record,
            {
                "outcome": "success",
                "phase": "head",
                "status": 200,
                "allow": True,
                "bytes": 0,
                "object_size": info.size,
            },
            lambda: Response(
                status_code=200, headers=headers, media_type="application/octet-stream"
            ),
        )

    @app.get(
        object_path,
        responses={
            200: {
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
                "description": "The object.",
            },
            206: {
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
                "description": "The requested range.",
            },
            404: {"model": ErrorBody, "description": "No such object."},
            416: {
                "model": ErrorBody,
                "description": "Range not satisfiable, or more than one range.",
            },
            **_ERRORS,
        },
        response_class=Response,
        summary="Read an object (streamed; one byte range)",
        operation_id="getObject",
    )
    async def get_object(
        request: Request,
        dataset: DatasetName,
        key: str,
        token: Token,
        range_: Annotated[
            str | None,
            Header(alias="Range", max_length=64, description="bytes=a-b, bytes=a- or bytes=-n"),
        ] = None,
    ) -> Response:
        """The object's bytes; logged with byte count and SHA-256 before the response completes."""
        record = RequestRecord("dataset.read", "GET", dataset, key=key, byte_range=range_)
        try:
            grant = await admit(record, request, token)
            full = storage_key(grant.location.prefix, key)
            byte_range = parse_range(range_)
            stream, small = await thread(open_object, grant.location, full, byte_range)
        except _REFUSALS as exc:
            return await refuse(record, exc)
        status = 206 if stream.content_range else 200
        headers = {
            **headers_for(record, status),
            **_object_headers(stream, stream.etag, stream.last_modified),
        }
        whole = byte_range is None
        if small is not None:
            return await _small(record, stream, small, headers, status, whole)
        started = record.event(
            "success",
            "started",
            status=status,
            allow=True,
            object_size=stream.size,
            length=stream.length,
            etag=stream.etag,
        )
        try:
            await thread(gateway.audit.append, [started])
        except AuditUnavailable as err:
            stream.close()
            _log.error("audit append failed", request_id=record.request_id, error=str(err))
            return unavailable(record)
        return _AuditedStream(gateway, record, stream, headers, status, whole)

    def open_object(
        location: DatasetLocation, full: str, byte_range: ByteRange | None
    ) -> tuple[ObjectStream, bytes | StorageUnavailable | None]:
        """Open the object; one that fits in a chunk is read (and closed) at once.

        Returns the stream and, for a small object, its bytes or the read's failure
        (``None`` for an object to be streamed), so a small read is one thread hop.
        """
        stream = gateway.storage.open(location, full, byte_range)
        if stream.length > gateway.chunk_bytes:
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

    async def _small(
        record: RequestRecord,
        stream: ObjectStream,
        read: bytes | StorageUnavailable,
        headers: dict[str, str],
        status: int,
        whole: bool,
    ) -> Response:
        if isinstance(read, StorageUnavailable):
            return await refuse(record, read)
        data = read
        details = {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "whole_object": whole,
            "object_size": stream.size,
            "etag": stream.etag,
        }
        return await log_then(
            record,
            {"outcome": "success", "phase": "read", "status": status, "allow": True, **details},
            lambda: Response(
                data, status_code=status, headers=headers, media_type="application/octet-stream"
            ),
        )

    async def active_sandbox(record: RequestRecord, identity: Identity) -> SandboxRef:
        """The token's sandbox, if it may act now (Ready, unexpired, not being deleted)."""
        try:
            try:
                ref = gateway.grants.active(identity.namespace, cached_only=True)[0]
            except NotCached:
                ref = (await thread(gateway.grants.active, identity.namespace))[0]
        except Forbidden as exc:
            record.sandbox = exc.sandbox
            raise
        record.sandbox = ref
        return ref

    async def open_upload(
        record: RequestRecord, request: Request, token: HTTPAuthorizationCredentials | None
    ) -> Upload:
        """Authenticate, find the token's sandbox and its outbox key, start the upload."""
        identity = await authenticate(record, request, token)
        validate_artifact_path(record.name)
        outbox = gateway.outbox
        if outbox is None:
            raise OutboxNotConfigured(
                "this gateway has no export outbox; ask the platform team to configure one"
            )
        ref = await active_sandbox(record, identity)
        key = outbox.key(ref, record.name)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > outbox.max_bytes:
            raise ArtifactTooLarge(f"the artifact is larger than {outbox.max_bytes} bytes")
        if await thread(outbox.exists, key):
            raise ArtifactExists(
                f"{record.name} is already in the outbox and is never replaced; "
                "write the new artifact under another path"
            )
        if gateway._writes >= gateway.outbox_max_writes:
            raise TooManyWrites(
                f"the gateway is already taking {gateway._writes} writes; retry in a few seconds"
            )
        gateway._writes += 1
        return outbox.start(
            key,
            {"regsandbox-request-id": record.request_id, "regsandbox-pod": identity.pod_ref or ""},
        )

    @app.put(
        "/v1/outbox/{path:path}",
        status_code=201,
        response_model=ArtifactWritten,
        responses={
            400: {"model": ErrorBody, "description": "Invalid artifact path, or empty body."},
            403: {"model": ErrorBody, "description": "Sandbox not Ready, expired or deleted."},
            409: {"model": ErrorBody, "description": "An artifact of that path exists."},
            413: {"model": ErrorBody, "description": "Larger than the gateway's limit."},
            429: {"model": ErrorBody, "description": "Too many writes under way; retry."},
            **{code: body for code, body in _ERRORS.items() if code not in (400, 403)},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
            }
        },
        summary="Write an artifact into the sandbox's export outbox",
        operation_id="putArtifact",
    )
    async def put_artifact(request: Request, path: str, token: Token) -> Response:
        """Store the body as artifact ``path`` of the token's sandbox; never replaces one.

        The body is streamed to storage as it arrives; the write is logged with its size
        and SHA-256 before the artifact is committed, and the answer carries both.
        """
        record = RequestRecord(
            "model.artifact.written", "PUT", path, key=path, kind="ModelArtifact"
        )
        upload: Upload | None = None
        try:
            try:
                upload = await open_upload(record, request, token)
                async for chunk in request.stream():
                    if chunk and upload.feed(chunk):
                        await thread(upload.flush)
                digest = await thread(upload.finish)
                # A long upload may outlive the sandbox: it must still be able to act.
                assert record.identity is not None  # set by open_upload
                await active_sandbox(record, record.identity)
            except ClientDisconnect:
                size = upload.size if upload is not None else 0
                event = record.event(
                    "failure", "refused", status=400, reason="ClientDisconnected", bytes=size
                )
                with contextlib.suppress(AuditUnavailable):
                    await thread(gateway.audit.append, [event])
                return Response(status_code=400, headers=headers_for(record, 400))
            except _REFUSALS as exc:
                return await refuse(record, exc)
            facts: dict[str, Any] = {
                "bytes": upload.size,
                "sha256": digest,
                "bucket": upload.bucket,
                "object": upload.key,
            }
            written = record.event("success", "commit", status=201, allow=True, **facts)
            try:
                await thread(gateway.audit.append, [written])
            except AuditUnavailable as err:
                _log.error("audit append failed", request_id=record.request_id, error=str(err))
                return unavailable(record, "nothing was stored")
            try:
                stored = await thread(upload.commit)
            except (ArtifactExists, StorageUnavailable) as exc:
                return await refuse(record, exc, **facts)
            _log.info("artifact written", request_id=record.request_id, object=stored.key)
            assert record.sandbox is not None  # set by open_upload
            body = ArtifactWritten(
                path=path,
                sandbox=record.sandbox.sandbox,
                size=stored.size,
                sha256=stored.sha256,
                source=f"s3://{stored.bucket}/{stored.key}",
                request_id=record.request_id,
            )
            return JSONResponse(
                body.model_dump(by_alias=True), 201, headers=headers_for(record, 201)
            )
        finally:
            if upload is not None:
                gateway._writes -= 1
            if upload is not None and not upload.committed:
                with anyio.CancelScope(shield=True):
                    if not await thread(upload.abort):
                        _log.warning(
                            "could not abort an unfinished upload (its parts stay invisible)",
                            request_id=record.request_id,
                        )

    return app
