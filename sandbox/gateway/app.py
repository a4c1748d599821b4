"""The gateway's HTTP API (FastAPI), published at ``/openapi.json``.

- ``GET  /v1/datasets/{dataset}/objects``        list objects (``prefix``, ``after``, ``limit``)
- ``HEAD /v1/datasets/{dataset}/objects/{key}``  object metadata
- ``GET  /v1/datasets/{dataset}/objects/{key}``  object bytes, streamed, one ``Range``
- ``PUT  /v1/outbox/{path}``                     write an artifact into the sandbox's outbox
- ``GET  /healthz``                              liveness
- S3 and STS requests (SigV4-signed, or to ``/``), when enabled: see
  :mod:`sandbox.gateway.s3api`

Every answer carries ``X-Request-Id``, the id in the audit entries and the logs the
request caused (:mod:`sandbox.gateway.requestids`).

Every dataset request, allowed or not, is logged in the audit log before its response
completes (see :mod:`sandbox.gateway.records` for the entry shape):

- refusals (401, 400, 403, 404, 416, 502, 503) are logged, then answered
  (:meth:`~sandbox.gateway.gateway.Gateway.refuse`, :mod:`sandbox.gateway.refusals`);
- HEAD, listings and reads that fit in one chunk are logged in one record written
  before any byte is sent (:mod:`sandbox.gateway.reads`);
- larger reads write a ``started`` record before the first byte and a ``completed``
  record (bytes, SHA-256) after the last chunk has been read from storage but before it
  is sent (:mod:`sandbox.gateway.streaming`). If that final append fails the gateway
  aborts the connection, so the client sees a body shorter than its Content-Length and
  never a complete, unlogged response.

If the audit log refuses any record written before the response starts, the answer is
503 and no data is sent. Outbox writes are described in :mod:`sandbox.gateway.writes`.

This module only parses requests and documents the API; each route is one call.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sandbox import __version__
from sandbox.gateway.auth import ReviewUnavailable, Unauthenticated
from sandbox.gateway.gateway import Gateway, to_thread
from sandbox.gateway.metrics import instrument
from sandbox.gateway.preconditions import Preconditions
from sandbox.gateway.reads import get_object, head_object, list_objects
from sandbox.gateway.records import RequestRecord
from sandbox.gateway.requestids import RequestIds
from sandbox.gateway.s3api import S3Dispatch, S3Surface
from sandbox.gateway.streaming import StreamAborted
from sandbox.gateway.wire import (
    BINARY,
    ERRORS,
    ArtifactWritten,
    ErrorBody,
    ObjectEntry,
    ObjectList,
)
from sandbox.gateway.writes import put_artifact

__all__ = [
    "ArtifactWritten",
    "ErrorBody",
    "Gateway",
    "ObjectEntry",
    "ObjectList",
    "StreamAborted",
    "create_app",
]

_bearer = HTTPBearer(auto_error=False, description="Projected ServiceAccount token.")
Token = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
DatasetName = Annotated[str, Path(description="Dataset name.", max_length=253)]
_OBJECT_PATH = "/v1/datasets/{dataset}/objects/{key:path}"
_GET_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": BINARY, "description": "The object."},
    206: {"content": BINARY, "description": "The requested range."},
    404: {"model": ErrorBody, "description": "No such object."},
    304: {"description": "If-None-Match or If-Modified-Since is false; no body."},
    412: {"model": ErrorBody, "description": "If-Match or If-Unmodified-Since is false."},
    416: {"model": ErrorBody, "description": "Range not satisfiable, or more than one range."},
    **ERRORS,
}
_PUT_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "Invalid artifact path, or empty body."},
    403: {"model": ErrorBody, "description": "Sandbox not Ready, expired or deleted."},
    409: {"model": ErrorBody, "description": "An artifact of that path exists."},
    413: {"model": ErrorBody, "description": "Larger than the gateway's limit."},
    429: {"model": ErrorBody, "description": "Too many writes under way; retry."},
    **{code: body for code, body in ERRORS.items() if code not in (400, 403)},
}


def _credentials(token: HTTPAuthorizationCredentials | None) -> str | None:
    return token.credentials if token else None


def _raw_path(request: Request) -> bytes:
    raw: bytes = request.scope.get("raw_path") or b""
    return raw


def create_app(gateway: Gateway, s3: S3Surface | None = None) -> FastAPI:
    """The gateway's FastAPI application; with ``s3``, also its S3 and STS surface
    (:mod:`sandbox.gateway.s3api`) on the same port."""
    app = FastAPI(
        title="regsandbox dataset gateway",
        version=__version__,
        description=(
            "Read granted datasets from inside a sandbox. Authenticate with a projected "
            "ServiceAccount token whose audience is the gateway's; every request is "
            "recorded in the audit log before its response completes."
        ),
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        refused = await _log_invalid_request(gateway, request)
        if refused is not None:
            return refused
        return await request_validation_exception_handler(request, exc)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/v1/datasets/{dataset}/objects",
        response_model=ObjectList,
        responses=ERRORS,
        summary="List the objects of a granted dataset",
        operation_id="listObjects",
    )
    async def list_objects_route(
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
        return await list_objects(
            gateway,
            record,
            _raw_path(request),
            _credentials(token),
            prefix=prefix,
            after=after,
            limit=limit,
        )

    @app.head(_OBJECT_PATH, responses=ERRORS, summary="Object metadata", operation_id="headObject")
    async def head_object_route(
        request: Request, dataset: DatasetName, key: str, token: Token
    ) -> Response:
        """Size, ETag and Last-Modified of an object, with no body."""
        record = RequestRecord("dataset.read", "HEAD", dataset, key=key)
        return await head_object(
            gateway,
            record,
            _raw_path(request),
            _credentials(token),
            key,
            conditions=Preconditions.from_headers(request.headers),
        )

    @app.get(
        _OBJECT_PATH,
        responses=_GET_RESPONSES,
        response_class=Response,
        summary="Read an object (streamed; one byte range)",
        operation_id="getObject",
    )
    async def get_object_route(
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
        return await get_object(
            gateway,
            record,
            _raw_path(request),
            _credentials(token),
            key,
            range_,
            conditions=Preconditions.from_headers(request.headers),
        )

    @app.put(
        "/v1/outbox/{path:path}",
        status_code=201,
        response_model=ArtifactWritten,
        responses=_PUT_RESPONSES,
        openapi_extra={"requestBody": {"required": True, "content": BINARY}},
        summary="Write an artifact into the sandbox's export outbox",
        operation_id="putArtifact",
    )
    async def put_artifact_route(request: Request, path: str, token: Token) -> Response:
        """Store the body as artifact ``path`` of the token's sandbox; never replaces one.

        The body is streamed to storage as it arrives; the write is logged with its size
        and SHA-256 before the artifact is committed, and the answer carries both.
        """
        return await put_artifact(gateway, request, path, _credentials(token))

    if s3 is not None:
        app.add_middleware(S3Dispatch, surface=s3)
    instrument(app, s3)  # outermost: S3 requests are counted too
    app.add_middleware(RequestIds)  # around everything: every answer and log line has its id
    return app


async def _log_invalid_request(gateway: Gateway, request: Request) -> Response | None:
    """Log a dataset request FastAPI refused as malformed (422); 503 if that fails."""
    params = request.scope.get("path_params") or {}
    dataset = params.get("dataset")
    if not isinstance(dataset, str) or not request.url.path.startswith("/v1/datasets/"):
        return None
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
        record.identity = await to_thread(gateway.reviewer.review, token)
    event = record.event("denied", "refused", status=422, reason="InvalidRequest", allow=False)
    if not await gateway.append(record, event):
        return gateway.unavailable(record)
    return None
