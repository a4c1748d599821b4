"""Refusals: which HTTP answer and which audit outcome each failure of a request gets.

One table, read top to bottom, maps every error the gateway's checks, S3 and the outbox
raise to a status code, an audit ``outcome``, a CamelCase reason and whether
authorisation had allowed the request (``None``: no decision was reached, e.g. the API
server was down). Anything not in the table is a bug and propagates.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.responses import JSONResponse

from audit.entry import Outcome
from sandbox.gateway.auth import ReviewUnavailable, Unauthenticated
from sandbox.gateway.authz import Forbidden, LookupUnavailable
from sandbox.gateway.objectkeys import InvalidKey
from sandbox.gateway.outbox import (
    ArtifactExists,
    ArtifactTooLarge,
    EmptyArtifact,
    OutboxNotConfigured,
    TooManyWrites,
)
from sandbox.gateway.preconditions import NotModified, PreconditionFailed
from sandbox.gateway.records import RequestRecord
from sandbox.gateway.s3 import (
    EndpointNotAllowed,
    ObjectNotFound,
    RangeNotSatisfiable,
    StorageUnavailable,
)
from sandbox.gateway.sigv4 import (
    BadRequest,
    ReplayMemoryFull,
    RequestReplayed,
    SignatureRefused,
    Unsupported,
)
from sandbox.gateway.sts import SessionRefused
from sandbox.gateway.wire import ErrorBody

__all__ = ["REFUSALS", "Refusal", "classify", "error_response", "response_headers"]


@dataclass(frozen=True)
class Refusal:
    """How one refused request is answered and logged."""

    status: int
    """HTTP status."""
    outcome: Outcome
    """Audit outcome: ``denied`` (the request may not be done) or ``failure``."""
    reason: str
    """CamelCase code, in the body, the audit entry and the logs."""
    allow: bool | None
    """What authorisation had decided; None if it never decided."""


_REASON_OF_EXCEPTION = ""
"""In the table: take the reason from the exception's own ``reason``."""

_TABLE: tuple[tuple[type[Exception], int, Outcome, str, bool | None], ...] = (
    (Unauthenticated, 401, "denied", _REASON_OF_EXCEPTION, False),
    (RequestReplayed, 403, "denied", "RequestReplayed", False),  # S3 surface (sigv4, sts)
    (ReplayMemoryFull, 503, "failure", "SlowDown", None),
    (SignatureRefused, 403, "denied", _REASON_OF_EXCEPTION, False),
    (SessionRefused, 403, "denied", _REASON_OF_EXCEPTION, False),
    (BadRequest, 400, "denied", _REASON_OF_EXCEPTION, False),
    (Unsupported, 501, "denied", "NotImplemented", False),
    (InvalidKey, 400, "denied", "InvalidKey", False),
    (EmptyArtifact, 400, "denied", "EmptyArtifact", False),
    (ArtifactExists, 409, "denied", "ArtifactExists", False),
    (ArtifactTooLarge, 413, "denied", "ArtifactTooLarge", False),
    (TooManyWrites, 429, "failure", "TooManyWrites", None),
    (OutboxNotConfigured, 503, "failure", "OutboxNotConfigured", None),
    (Forbidden, 403, "denied", _REASON_OF_EXCEPTION, False),
    (EndpointNotAllowed, 403, "denied", "EndpointNotAllowed", True),
    (ObjectNotFound, 404, "failure", _REASON_OF_EXCEPTION, True),  # or NoSuchUpload
    (RangeNotSatisfiable, 416, "failure", "RangeNotSatisfiable", True),
    (PreconditionFailed, 412, "failure", "PreconditionFailed", True),  # nothing sent
    (NotModified, 304, "failure", "NotModified", True),  # no body (reads.condition_false)
    (StorageUnavailable, 502, "failure", "StorageUnavailable", True),
    (ReviewUnavailable, 503, "failure", "KubernetesUnavailable", None),
    (LookupUnavailable, 503, "failure", "KubernetesUnavailable", None),
)

REFUSALS: tuple[type[Exception], ...] = tuple(row[0] for row in _TABLE)
"""Every exception a request handler turns into a refusal (for ``except REFUSALS``)."""


def classify(exc: Exception) -> Refusal:
    """The refusal ``exc`` stands for; ``exc`` itself is raised again if it is none."""
    for kind, status, outcome, reason, allow in _TABLE:
        if isinstance(exc, kind):
            code = reason or str(getattr(exc, "reason", "")) or kind.__name__
            return Refusal(status, outcome, code, allow)
    raise exc


def response_headers(record: RequestRecord, status: int) -> dict[str, str]:
    """Headers every answer to ``record``'s request carries."""
    headers = {"X-Request-Id": record.request_id, "Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="regsandbox-gateway"'
    return headers


def error_response(
    record: RequestRecord,
    status: int,
    reason: str,
    detail: str,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An :class:`~sandbox.gateway.wire.ErrorBody` answer to ``record``'s request."""
    body = ErrorBody(detail=detail, reason=reason, request_id=record.request_id)
    return JSONResponse(
        body.model_dump(by_alias=True),
        status,
        headers={**response_headers(record, status), **(headers or {})},
    )
