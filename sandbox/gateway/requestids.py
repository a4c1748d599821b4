"""Request ids: one per HTTP request, in the response, the gateway's logs and the audit log.

:class:`RequestIds` (ASGI middleware, outermost) gives every request a fresh id — a
lowercase UUID in hex — that is:

- the ``request_id`` of every audit entry the request causes
  (:class:`~sandbox.gateway.records.RequestRecord` takes it from here);
- echoed as ``X-Request-Id`` on every answer;
- bound to every log line logged while the request is handled, and logged once more when
  it ends (method, path without the query string, status, milliseconds).

A client may send its own ``X-Request-Id`` to correlate with its logs. A well-formed one
(1-128 of ``A-Z a-z 0-9 . _ : -``, starting with a letter or digit) is kept as
``client_request_id``: in the audit entries' ``details``, in the log lines, and echoed
as ``X-Client-Request-Id``; anything else is ignored. It never replaces the gateway's
own id: that one pairs a streamed read's ``started`` and ``completed`` records, and a
workload choosing it could pair its read with another request's and hide a read that
never completed.
"""

from __future__ import annotations

import re
import time
import uuid
from contextvars import ContextVar

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CLIENT_HEADER",
    "HEADER",
    "RequestIds",
    "client_request_id",
    "request_id",
    "well_formed",
]

HEADER = "X-Request-Id"
"""The header carrying the gateway's id in answers, and a client's id in requests."""
CLIENT_HEADER = "X-Client-Request-Id"
"""The header echoing a client's own well-formed ``X-Request-Id``."""

_WELL_FORMED = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_request_id: ContextVar[str | None] = ContextVar("regsandbox_request_id", default=None)
_client_id: ContextVar[str | None] = ContextVar("regsandbox_client_request_id", default=None)
_log = structlog.get_logger("regsandbox.gateway")


def well_formed(value: str) -> bool:
    """Whether ``value`` may be kept as a client's request id."""
    return bool(_WELL_FORMED.match(value))


def request_id() -> str:
    """The id of the request being handled (a fresh one outside a request)."""
    return _request_id.get() or uuid.uuid4().hex


def client_request_id() -> str | None:
    """The client's own well-formed ``X-Request-Id`` for the request being handled."""
    return _client_id.get()


class RequestIds:
    """ASGI middleware assigning, echoing and logging request ids (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call; only HTTP requests get an id."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        client = None
        for name, value in scope.get("headers") or ():
            if name.lower() == b"x-request-id":
                text = value.decode("latin-1")
                client = text if well_formed(text) else None
                break
        status = 0

        async def send_with_ids(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [
                    (k, v)
                    for k, v in message.get("headers") or ()
                    if k.lower() not in (b"x-request-id", b"x-client-request-id")
                ]
                headers.append((b"x-request-id", rid.encode()))
                if client is not None:
                    headers.append((b"x-client-request-id", client.encode()))
                message = {**message, "headers": headers}
            await send(message)

        ids = {"request_id": rid, **({"client_request_id": client} if client else {})}
        rid_token, client_token = _request_id.set(rid), _client_id.set(client)
        started = time.monotonic()
        try:
            with structlog.contextvars.bound_contextvars(**ids):
                try:
                    await self.app(scope, receive, send_with_ids)
                finally:
                    quiet = scope.get("path") == "/healthz"  # probes, every few seconds
                    (_log.debug if quiet else _log.info)(
                        "request",
                        method=scope.get("method"),
                        path=scope.get("path"),
                        status=status or None,
                        ms=round((time.monotonic() - started) * 1000, 1),
                    )
        finally:
            _request_id.reset(rid_token)
            _client_id.reset(client_token)
