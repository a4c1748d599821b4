"""The S3 (and STS) surface of the gateway: what a sandbox may do, as S3 clients ask it.

Path-style requests (``/<bucket>/<key>``) on the gateway's own port; a request goes
here when it is signed with SigV4, is presigned, or names ``/`` (``ListBuckets`` and
the STS ``POST``); everything else is the REST API. The buckets a sandbox sees are its
granted datasets (read-only) and :data:`OUTBOX_BUCKET`, its export outbox (write-only):

- ``GET /`` ListBuckets; ``HEAD /<dataset>`` HeadBucket;
  ``GET /<dataset>?list-type=2`` ListObjectsV2 (``prefix``, ``delimiter=/``,
  ``continuation-token``, ``start-after``, ``max-keys``, ``encoding-type=url``);
- ``HEAD``/``GET /<dataset>/<key>`` HeadObject, GetObject (one ``Range``);
- ``PUT /outbox/<path>`` PutObject: an artifact of the sandbox's outbox, and the
  multipart uploads of one (:mod:`sandbox.gateway.s3multipart`);
- ``POST /`` with ``Action=AssumeRoleWithWebIdentity``: credentials
  (:mod:`sandbox.gateway.sts`).

Anything else is answered with the S3 error a client expects (``AccessDenied``,
``NoSuchBucket``, ``NoSuchKey``, ``NotImplemented`` …).

Each request is authenticated in this order: the SigV4 ``Authorization`` header is
parsed, ``X-Amz-Date`` must be within 15 minutes, the session token is opened (it must
be this access key's and unexpired), the signature is recomputed with botocore over the
request as received, the signature must not have been seen before, and the pod's
projected token inside the session is reviewed again (TokenReview). Then the request
takes exactly the REST API's path through the :class:`~sandbox.gateway.gateway.Gateway`
(grant check, refusal logged before it is answered, audit record before any byte,
:class:`~sandbox.gateway.streaming.AuditedStream` for large reads, outbox writes
logged before commit), with the projected token as its credentials; only the answer's
format differs (XML errors, S3 headers). A refusal keeps the status it is logged with.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.api.dataset import DatasetLocation
from sandbox.gateway import s3multipart
from sandbox.gateway.auth import Identity, Unauthenticated, token_expiry
from sandbox.gateway.authz import Forbidden
from sandbox.gateway.gateway import Gateway, to_thread
from sandbox.gateway.objectkeys import (
    MAX_KEY_BYTES,
    InvalidKey,
    check_raw_path,
    dataset_prefix,
    storage_key,
    validate_listing_prefix,
)
from sandbox.gateway.preconditions import NotModified, PreconditionFailed, Preconditions
from sandbox.gateway.reads import condition_false, get_object, head_object
from sandbox.gateway.records import Action, RequestRecord
from sandbox.gateway.refusals import REFUSALS, response_headers
from sandbox.gateway.s3 import (
    ByteRange,
    ObjectNotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
    parse_range,
)
from sandbox.gateway.s3chunked import BodyCheck, body_check
from sandbox.gateway.s3xml import (
    ListedObject,
    error_xml,
    list_buckets_xml,
    list_objects_xml,
    s3_code,
    sts_credentials_xml,
    sts_error_xml,
    xml_response,
)
from sandbox.gateway.sigv4 import (
    BadRequest,
    ReplayGuard,
    SeedSignature,
    SignatureRefused,
    Unsupported,
    amz_time,
    parse_authorization,
    verify_signature,
)
from sandbox.gateway.streaming import object_headers
from sandbox.gateway.sts import (
    MAX_LIFETIME_SECONDS,
    MIN_LIFETIME_SECONDS,
    CredentialIssuer,
    SessionRefused,
)
from sandbox.gateway.writes import put_artifact

__all__ = ["OUTBOX_BUCKET", "S3Dispatch", "S3Surface"]

OUTBOX_BUCKET = "outbox"
"""The bucket name of the sandbox's export outbox (a Dataset of this name is not
reachable over S3; use the REST API for it)."""

_MAX_FORM = 64 * 1024
_HIGHEST = "\U0010ffff"  # sorts after every key under a common prefix
_SESSION_NAME = re.compile(r"^[\w+=,.@-]{2,64}$")
_ROLE_ARN = re.compile(r"^arn:[a-z-]+:iam::[0-9a-z-]{0,32}:role/[\w+=,.@/-]{1,512}$")


class S3Surface:
    """Answers S3 and STS requests through the :class:`Gateway`'s steps."""

    def __init__(
        self,
        gateway: Gateway,
        issuer: CredentialIssuer,
        *,
        replay: ReplayGuard | None = None,
        bind_source_address: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gateway = gateway
        """The gateway whose checks, storage and audit log every request uses."""
        self.issuer = issuer
        """Issues and opens session credentials."""
        self.replay = replay or ReplayGuard(clock=clock)
        """Signatures already used."""
        self.bind_source_address = bind_source_address
        """Whether credentials work only from the address they were issued to."""
        self._clock = clock

    @staticmethod
    def wants(scope: Scope) -> bool:
        """Whether the request is an S3/STS one (SigV4-signed, presigned, or ``/``)."""
        if scope.get("path") == "/":
            return True
        for name, value in scope.get("headers") or ():
            if name == b"authorization" and value[:4] in (b"AWS4", b"AWS "):
                return True
        query: bytes = scope.get("query_string") or b""
        return b"X-Amz-Credential=" in query or b"AWSAccessKeyId=" in query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if request.method == "POST" and scope.get("path") == "/":
            response = await self._sts(request)
        else:
            response = await self._s3(request)
        await response(scope, receive, send)

    # -- S3 ---------------------------------------------------------------------------

    async def _s3(self, request: Request) -> Response:
        raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
        bucket, key = _split(raw, errors="replace")
        record = _record(request.method, bucket, key, request.headers.get("range"))
        head = request.method == "HEAD"
        resource = _resource(bucket, key)
        try:
            check_raw_path(raw)
            identity, token = await self._authenticate(request, record)
            answer = await self._dispatch(request, record, raw, token, identity)
        except REFUSALS as exc:
            answer = self._as_s3(await self.gateway.refuse(record, exc), resource, head=head)
        if request.method in ("PUT", "POST") and answer.status_code >= 300:
            # The body may be unread (an SDK waiting on "Expect: 100-continue" never sends
            # it): close the connection so its bytes are not read as the next request.
            answer.headers["Connection"] = "close"
        return answer

    async def _dispatch(
        self, request: Request, record: RequestRecord, raw: bytes, token: str, identity: Identity
    ) -> Response:
        """Answer the authenticated request ``record`` describes."""
        bucket, key = _split(raw, errors="strict")
        query = request.query_params
        if not bucket:
            if request.method != "GET":
                raise Unsupported("only ListBuckets is offered on /")
            return await self._list_buckets(record, identity)
        if "x-amz-copy-source" in request.headers:
            raise Unsupported("CopyObject is not offered")
        if bucket == OUTBOX_BUCKET:
            return await self._outbox(request, record, key, token, identity)
        if request.method not in ("GET", "HEAD"):
            raise Forbidden("DatasetReadOnly", "datasets are read-only; write into the outbox")
        if not key:
            if request.method == "HEAD":
                await self.gateway.admit_read(record, raw, token)
                return await self._ok_head(record)
            if query.get("list-type") != "2":
                raise Unsupported("only ListObjectsV2 (list-type=2) is offered")
            return await self._list_objects(request, record, raw, token)
        return await self._read(request, record, raw, token, key)

    async def _outbox(
        self, request: Request, record: RequestRecord, key: str, token: str, identity: Identity
    ) -> Response:
        """The outbox takes new artifacts (PutObject, multipart), and answers HeadBucket."""
        method, query, gw = request.method, request.query_params, self.gateway
        upload_id = query.get("uploadId")
        if key and method == "POST" and "uploads" in query:
            return await s3multipart.create(gw, record, identity, key, OUTBOX_BUCKET)
        if key and upload_id is not None:
            if method == "PUT" and "partNumber" in query:
                checked = self._checked(request)
                number = query["partNumber"]
                return await s3multipart.upload_part(
                    gw, record, identity, checked, upload_id, number
                )
            if method == "POST":
                body = self._checked(request)
                return await s3multipart.complete(
                    gw, record, identity, body, upload_id, OUTBOX_BUCKET
                )
            if method == "DELETE":
                return await s3multipart.abort(gw, record, identity, upload_id)
        if method == "PUT" and key and upload_id is None:
            return await self._put(request, key, token)
        if method == "HEAD" and not key:
            await gw.active_sandbox(record, identity)
            return await self._ok_head(record)
        raise Forbidden(
            "OutboxWriteOnly",
            "the outbox only takes new artifacts (PutObject, multipart uploads); "
            "it is not read or changed",
        )

    async def _read(
        self, request: Request, record: RequestRecord, raw: bytes, token: str, key: str
    ) -> Response:
        """HeadObject or GetObject, through the REST API's read path."""
        if key.endswith("/"):  # a "directory": no such object (clients then list)
            await self.gateway.admit_read(record, raw, token)
            validate_listing_prefix(key)
            raise ObjectNotFound("no such object (a key ending in '/' names a folder)")
        head = request.method == "HEAD"
        byte_range = request.headers.get("range")
        if byte_range is not None and (
            not byte_range.strip().lower().startswith("bytes=") or "," in byte_range
        ):
            # RFC 9110 14.2: a range unit the server does not know is ignored; S3 serves
            # no multi-range requests. S3 and MinIO then send the whole object (200).
            byte_range = record.byte_range = None
        conditions = Preconditions.from_headers(request.headers)
        if head and byte_range is not None:
            answer = await self._head_range(record, raw, token, key, byte_range, conditions)
        elif head:
            answer = await head_object(self.gateway, record, raw, token, key, conditions=conditions)
        else:
            answer = await get_object(
                self.gateway, record, raw, token, key, byte_range, conditions=conditions
            )
        return self._as_s3(answer, _resource(record.name, key), head=head)

    async def _head_range(
        self,
        record: RequestRecord,
        raw: bytes,
        token: str,
        key: str,
        byte_range: str,
        conditions: Preconditions | None,
    ) -> Response:
        """HeadObject with a Range: 206 with the range's Content-Length and
        Content-Range, or 416 InvalidRange, as S3 answers (no byte is sent); a false
        condition first (304 or 412)."""
        gw = self.gateway
        try:
            grant = await gw.admit_read(record, raw, token)
            full = storage_key(grant.location.prefix, key)
            wanted = parse_range(byte_range)
            info = await to_thread(gw.storage.head, grant.location, full, conditions)
            first, last = _span(wanted, info.size)
        except (PreconditionFailed, NotModified) as exc:
            return await condition_false(gw, record, exc)
        except REFUSALS as exc:
            return await gw.refuse(record, exc)
        headers = {
            **response_headers(record, 206),
            **object_headers(last - first + 1, info.etag, info.last_modified),
            "Content-Range": f"bytes {first}-{last}/{info.size}",
        }
        event = record.event(
            "success", "head", status=206, allow=True, bytes=0, object_size=info.size
        )
        return await gw.log_then(
            record,
            event,
            lambda: Response(
                status_code=206, headers=headers, media_type="application/octet-stream"
            ),
        )

    async def _authenticate(self, request: Request, record: RequestRecord) -> tuple[Identity, str]:
        """Check the signature and the session; the pod's identity and projected token."""
        headers = request.headers
        if "x-amz-credential" in {k.lower() for k in request.query_params}:
            raise SignatureRefused("AccessDenied", "presigned URLs are not accepted")
        signed = parse_authorization(headers.get("authorization"))
        if signed.service != "s3":
            raise SignatureRefused("SignatureDoesNotMatch", "the credential scope is not s3")
        amz_date = headers.get("x-amz-date", "")
        signed_at = amz_time(amz_date, self._clock())
        session = self.issuer.open(headers.get("x-amz-security-token"), signed.access_key_id)
        if session.source is not None and session.source != _source(request):
            raise SessionRefused(
                "InvalidToken",
                "these credentials were issued to another pod; a pod must assume the role itself",
            )
        raw: bytes = request.scope.get("raw_path") or b"/"
        request.state.sigv4_seed = verify_signature(
            signed,
            session.secret_access_key,
            method=request.method,
            host_url="http://" + headers.get("host", ""),
            raw_path=raw.decode("latin-1"),
            raw_query=(request.scope.get("query_string") or b"").decode("latin-1"),
            headers={k.lower(): v for k, v in headers.items()},
            amz_date=amz_date,
        )
        self.replay.first_use(signed.signature, signed_at, read=request.method in ("GET", "HEAD"))
        try:
            identity = await self._review(session.web_token)
        except Unauthenticated as exc:
            raise SessionRefused(
                "ExpiredToken",
                f"the pod's token is no longer accepted ({exc.reason}); the pod may be gone",
            ) from None
        if (identity.namespace, identity.pod) != (session.namespace, session.pod):
            raise SessionRefused("InvalidToken", "the session does not match its pod")
        record.identity = identity
        return identity, session.web_token

    async def _review(self, token: str) -> Identity:
        """The pod behind ``token`` (TokenReview, or its cached answer)."""
        found = self.gateway.reviewer.cached(token)
        if found is not None:
            return found
        return await to_thread(self.gateway.reviewer.review, token)

    async def _ok_head(self, record: RequestRecord) -> Response:
        event = record.event("success", "head", status=200, allow=True, bytes=0)
        return await self.gateway.log_then(
            record, event, lambda: Response(status_code=200, headers=_ids(record))
        )

    async def _list_buckets(self, record: RequestRecord, identity: Identity) -> Response:
        try:
            ref, _, status = await to_thread(
                functools.partial(self.gateway.grants.active, identity.namespace)
            )
        except Forbidden as exc:
            record.sandbox = exc.sandbox
            raise
        record.sandbox = ref
        names = sorted(d.name for d in status.datasets if d.granted and d.name != OUTBOX_BUCKET)
        names.append(OUTBOX_BUCKET)
        event = record.event("success", "list", status=200, allow=True, count=len(names))
        body = list_buckets_xml(identity.service_account_ref, names)
        return await self.gateway.log_then(
            record, event, lambda: xml_response(body, 200, _ids(record))
        )

    async def _list_objects(
        self, request: Request, record: RequestRecord, raw: bytes, token: str
    ) -> Response:
        query = request.query_params
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter") or None
        continuation = query.get("continuation-token") or None
        start_after = query.get("start-after") or None
        url_encoded = query.get("encoding-type") == "url"
        record.key = prefix
        grant = await self.gateway.admit_read(record, raw, token)
        validate_listing_prefix(prefix)
        if delimiter not in (None, "/"):
            raise InvalidKey("only the delimiter '/' is supported")
        max_keys = _max_keys(query.get("max-keys"), self.gateway.list_max_keys)
        after = _after(continuation) if continuation else start_after
        if after is not None:
            _check_marker(after)
        base = dataset_prefix(grant.location.prefix)
        objects: list[ListedObject] = []
        prefixes: list[str] = []
        truncated = False
        if max_keys > 0:  # MaxKeys=0 is an empty, untruncated page (as on S3)
            objects, prefixes, truncated = await to_thread(
                _list_page, self.gateway, grant.location, base, prefix, delimiter, after, max_keys
            )
        next_token = None
        if truncated:
            last = max([o.key for o in objects] + [p + _HIGHEST for p in prefixes])
            next_token = base64.urlsafe_b64encode(last.encode()).decode()
        event = record.event(
            "success",
            "list",
            status=200,
            allow=True,
            count=len(objects) + len(prefixes),
            truncated=truncated,
        )
        body = list_objects_xml(
            bucket=record.name,
            prefix=prefix,
            delimiter=delimiter,
            max_keys=max_keys,
            objects=objects,
            prefixes=prefixes,
            truncated=truncated,
            continuation=continuation,
            next_continuation=next_token,
            start_after=start_after,
            url_encoded=url_encoded,
        )
        return await self.gateway.log_then(
            record, event, lambda: xml_response(body, 200, _ids(record))
        )

    @staticmethod
    def _checked(request: Request) -> Request:
        """``request``, whose body is decoded (aws-chunked) and verified as it is read:
        the signed ``X-Amz-Content-SHA256``, chunk signatures, flexible checksums
        (:mod:`sandbox.gateway.s3chunked`)."""
        seed: SeedSignature | None = getattr(request.state, "sigv4_seed", None)
        check = body_check({k.lower(): v for k, v in request.headers.items()}, seed)
        return _CheckedBody(request.scope, request.receive, check)

    async def _put(self, request: Request, key: str, token: str) -> Response:
        checked = self._checked(request)
        answer = await put_artifact(self.gateway, checked, key, token)
        if not isinstance(answer, JSONResponse) or answer.status_code != 201:
            return self._as_s3(answer, _resource(OUTBOX_BUCKET, key), head=False)
        written = json.loads(bytes(answer.body))
        headers = {
            "ETag": f'"{written["sha256"][:32]}"',
            "x-amz-request-id": written["requestId"],
            "X-Request-Id": written["requestId"],
        }
        return Response(status_code=200, headers=headers)

    def _as_s3(self, answer: Response, resource: str, *, head: bool) -> Response:
        """A refusal of the Gateway (JSON) as the S3 error; anything else as it is (with
        the request id also as ``x-amz-request-id``, where S3 clients look for it)."""
        if answer.status_code < 300 or not isinstance(answer, JSONResponse):
            if "x-request-id" in answer.headers and "x-amz-request-id" not in answer.headers:
                answer.headers["x-amz-request-id"] = answer.headers["x-request-id"]
            return answer
        body = json.loads(bytes(answer.body))
        request_id = str(body.get("requestId", ""))
        headers = {
            k: v
            for k, v in answer.headers.items()
            if k.lower() in ("x-request-id", "retry-after", "content-range", "cache-control")
        }
        headers["x-amz-request-id"] = request_id
        code = s3_code(str(body.get("reason", "")))
        xml = error_xml(code, str(body.get("detail", "")), resource, request_id)
        return xml_response(xml, answer.status_code, headers, head=head)

    # -- STS --------------------------------------------------------------------------

    async def _sts(self, request: Request) -> Response:
        record = RequestRecord("credentials.issued", "POST", "-", kind="Credentials")
        try:
            return await self._assume_role(request, record)
        except REFUSALS as exc:
            answer = await self.gateway.refuse(record, exc)
        body = json.loads(bytes(answer.body)) if isinstance(answer, JSONResponse) else {}
        reason = str(body.get("reason", "ServiceUnavailable"))
        xml = sts_error_xml(
            s3_code(reason),
            str(body.get("detail", "")),
            record.request_id,
            sender=answer.status_code < 500,
        )
        return xml_response(xml, answer.status_code, _ids(record))

    async def _assume_role(self, request: Request, record: RequestRecord) -> Response:
        params = await _form(request)
        if params.get("Action") != "AssumeRoleWithWebIdentity":
            raise BadRequest("InvalidAction", "only AssumeRoleWithWebIdentity is offered")
        token = params.get("WebIdentityToken", "")
        role = params.get("RoleArn", "")
        name = params.get("RoleSessionName", "")
        if not token or not role or not name:
            raise BadRequest(
                "MissingParameter", "WebIdentityToken, RoleArn and RoleSessionName are required"
            )
        if not _ROLE_ARN.match(role) or not _SESSION_NAME.match(name):
            raise BadRequest("ValidationError", "RoleArn or RoleSessionName is malformed")
        record.name = name
        duration = _duration(params.get("DurationSeconds"))
        reviewer = self.gateway.reviewer
        try:
            identity = await self._review(token)
        except Unauthenticated as exc:
            raise BadRequest(
                "InvalidIdentityToken", f"the web identity token was refused ({exc.reason})"
            ) from None
        record.identity = identity
        try:
            ref, expires, _ = await to_thread(
                functools.partial(self.gateway.grants.active, identity.namespace)
            )
        except Forbidden as exc:
            record.sandbox = exc.sandbox
            raise
        record.sandbox = ref
        not_after = min(expires.timestamp(), token_expiry(token) or expires.timestamp())
        creds = self.issuer.issue(
            token,
            identity,
            not_after=not_after,
            duration=duration,
            source=_source(request) if self.bind_source_address else None,
        )
        event = record.event(
            "success",
            "issued",
            status=200,
            allow=True,
            access_key_id=creds.access_key_id,
            expires=int(creds.expiration),
            role_arn=role,
        )
        body = sts_credentials_xml(
            access_key_id=creds.access_key_id,
            secret_access_key=creds.secret_access_key,
            session_token=creds.session_token,
            expiration=creds.expiration,
            subject=f"system:serviceaccount:{identity.namespace}:{identity.service_account}",
            role_arn=role,
            session_name=name,
            audience=reviewer.audience,
            request_id=record.request_id,
        )
        return await self.gateway.log_then(
            record, event, lambda: xml_response(body, 200, _ids(record))
        )


class S3Dispatch:
    """ASGI middleware: S3/STS requests to the :class:`S3Surface`, the rest to ``app``."""

    def __init__(self, app: ASGIApp, surface: S3Surface) -> None:
        self.app = app
        self.surface = surface

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.surface.wants(scope):
            await self.surface(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _CheckedBody(Request):
    """The request, whose body is decoded and verified by ``check`` as it streams; the
    last read raises if the body as a whole fails (before any writer commits)."""

    def __init__(self, scope: Scope, receive: Receive, check: BodyCheck) -> None:
        super().__init__(scope, receive)
        self._check = check

    async def stream(self) -> AsyncGenerator[bytes, None]:
        async for chunk in super().stream():
            for piece in self._check.feed(chunk):
                yield piece
        self._check.finish()


def _split(raw: bytes, *, errors: str) -> tuple[str, str]:
    """Bucket and key of a path-style request path (percent-decoded UTF-8)."""
    path = raw.decode("latin-1").lstrip("/")
    bucket, _, key = path.partition("/")
    try:
        return unquote(bucket, errors=errors), unquote(key, errors=errors)
    except UnicodeDecodeError:
        raise InvalidKey("the object key is not UTF-8") from None


def _record(method: str, bucket: str, key: str, byte_range: str | None) -> RequestRecord:
    if bucket == OUTBOX_BUCKET and method not in ("GET", "HEAD"):
        return RequestRecord(
            "model.artifact.written", method, key or "-", key=key, kind="ModelArtifact"
        )
    action: Action = "dataset.read" if key else "dataset.list"
    return RequestRecord(action, method, bucket or "-", key=key or None, byte_range=byte_range)


def _ids(record: RequestRecord) -> dict[str, str]:
    return {
        "x-amz-request-id": record.request_id,
        "X-Request-Id": record.request_id,
        "Cache-Control": "no-store",
    }


def _source(request: Request) -> str | None:
    return request.client.host if request.client else None


def _resource(bucket: str, key: str) -> str:
    return "/" + bucket + ("/" + key if key else "")


def _max_keys(value: str | None, most: int) -> int:
    if value is None:
        return most
    if not value.isdigit() or len(value) > 7:
        raise InvalidKey("max-keys must be a number")
    return min(int(value), most)


def _after(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode()
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidKey("the continuation token is not one this gateway gave") from None


def _span(wanted: ByteRange | None, size: int) -> tuple[int, int]:
    """The first and last byte ``wanted`` names in an object of ``size`` bytes (clipped
    to its end); RangeNotSatisfiable when it names none."""
    if wanted is None:
        raise RangeNotSatisfiable("no byte range", size)
    if wanted.start is None:  # the last n bytes
        if size == 0:
            raise RangeNotSatisfiable("range outside the object", size)
        return max(0, size - (wanted.end or 0)), size - 1
    if wanted.start >= size:
        raise RangeNotSatisfiable("range outside the object", size)
    last = size - 1 if wanted.end is None else min(wanted.end, size - 1)
    return wanted.start, last


def _check_marker(after: str) -> None:
    """Refuse a ``start-after`` (or continuation) marker no key could equal. It is only a
    position in the listing (the store lists under the dataset's prefix whatever it is),
    so any key the listing can show, ``%`` or ``..`` in it included, is accepted, and
    paging past such a key works as on S3."""
    if len(after.rstrip(_HIGHEST).encode()) > MAX_KEY_BYTES:
        raise InvalidKey(f"start-after is longer than {MAX_KEY_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in after):
        raise InvalidKey("start-after contains NUL or a control character")


def _list_page(  # noqa: PLR0917 - one call, run in a worker thread
    gw: Gateway,
    location: DatasetLocation,
    base: str,
    prefix: str,
    delimiter: str | None,
    after: str | None,
    max_keys: int,
) -> tuple[list[ListedObject], list[str], bool]:
    kwargs: dict[str, Any] = {
        "Bucket": location.bucket,
        "Prefix": base + prefix,
        "MaxKeys": max_keys,
    }
    if delimiter:
        kwargs["Delimiter"] = delimiter
    if after:
        kwargs["StartAfter"] = base + after
    try:
        r = gw.storage.client(location).list_objects_v2(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise StorageUnavailable(f"S3 LIST failed: {type(exc).__name__}") from None
    objects = [
        ListedObject(
            str(o["Key"])[len(base) :],
            int(o.get("Size", 0)),
            str(o.get("ETag", "")),
            o.get("LastModified"),
        )
        for o in r.get("Contents", [])
        if str(o.get("Key", "")).startswith(base)
    ]
    prefixes = [
        str(p["Prefix"])[len(base) :]
        for p in r.get("CommonPrefixes", [])
        if str(p.get("Prefix", "")).startswith(base)
    ]
    return objects, prefixes, bool(r.get("IsTruncated"))


async def _form(request: Request) -> dict[str, str]:
    """The STS parameters: the query and the form body (at most 64 KiB), one value each."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM:
            raise BadRequest("ValidationError", "the request body is too large")
    params: dict[str, str] = {}
    for source in (request.scope.get("query_string") or b"", body):
        try:
            parsed = parse_qs(source.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequest("ValidationError", "the form is not UTF-8") from None
        for name, values in parsed.items():
            if len(values) != 1 or name in params:
                raise BadRequest("ValidationError", f"parameter {name} given more than once")
            params[name] = values[0]
    return params


def _duration(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or not MIN_LIFETIME_SECONDS <= int(value) <= MAX_LIFETIME_SECONDS:
        raise BadRequest(
            "ValidationError",
            f"DurationSeconds must be between {MIN_LIFETIME_SECONDS} and {MAX_LIFETIME_SECONDS}",
        )
    return int(value)
