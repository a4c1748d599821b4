"""The :class:`Gateway`: admission, refusal and the audit record of every request.

The HTTP layer (:mod:`sandbox.gateway.app`) only parses requests; the reads
(:mod:`sandbox.gateway.reads`) and the outbox writes (:mod:`sandbox.gateway.writes`) are
sequences of the steps here:

- **admission**: authenticate the bearer token (TokenReview), then ask the grant
  resolver whether the token's sandbox may act (a write) or read this dataset (a read).
  Answers cached by the reviewer and the resolver are used on the event loop; only a
  real API request goes to a worker thread, since each hop costs latency under load.
- **refusal**: a failed check is logged in the audit log, then answered; if the log
  refuses the record, the answer is 503 and nothing is sent or stored.
- **audit before answer**: :meth:`Gateway.log_then` makes a record durable before the
  response is built.
- **write slots**: at most ``outbox_max_writes`` writes are taken at once.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import structlog
from fastapi.responses import JSONResponse, Response

from audit.client import AuditSink, AuditUnavailable
from audit.entry import Event
from sandbox.gateway.auth import Identity, TokenReviewer
from sandbox.gateway.authz import Forbidden, Grant, GrantResolver, NotCached, SandboxRef
from sandbox.gateway.metrics import (
    APPEND_FAILURES,
    APPEND_SECONDS,
    AUDIT_UNAVAILABLE,
    count_refusal,
)
from sandbox.gateway.objectkeys import InvalidKey, check_raw_path
from sandbox.gateway.outbox import OutboxWriter, TooManyWrites
from sandbox.gateway.records import RequestRecord
from sandbox.gateway.refusals import classify, error_response
from sandbox.gateway.s3 import RangeNotSatisfiable, Storage

__all__ = ["Gateway", "to_thread"]

_log = structlog.get_logger("regsandbox.gateway")
_T = TypeVar("_T")
_DATASET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


async def to_thread(func: Callable[..., _T], *args: Any) -> _T:
    """Run blocking ``func(*args)`` in a worker thread."""
    return await anyio.to_thread.run_sync(func, *args)


@dataclass
class Gateway:
    """The checks, the storage and the audit log, and the steps every request takes."""

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

    # -- the audit record -------------------------------------------------------------

    async def append(self, record: RequestRecord, event: Event) -> bool:
        """Make ``event`` durable; False (and logged) if the audit log refused it."""
        started = time.perf_counter()
        try:
            await to_thread(self.audit.append, [event])
        except AuditUnavailable as err:
            APPEND_FAILURES.inc()
            _log.error("audit append failed", request_id=record.request_id, error=str(err))
            return False
        APPEND_SECONDS.observe(time.perf_counter() - started)
        return True

    async def log_then(
        self, record: RequestRecord, event: Event, respond: Callable[[], Response]
    ) -> Response:
        """``respond()`` once ``event`` is durable; 503 with nothing sent if it is not."""
        if not await self.append(record, event):
            return self.unavailable(record)
        return respond()

    @staticmethod
    def unavailable(record: RequestRecord, what: str = "nothing was sent") -> JSONResponse:
        """The 503 of a request whose record the audit log refused."""
        AUDIT_UNAVAILABLE.inc()
        return error_response(
            record, 503, "AuditUnavailable", f"the audit log is unavailable; {what}"
        )

    async def refuse(self, record: RequestRecord, exc: Exception, **extra: Any) -> Response:
        """Log the refusal ``exc`` stands for, then answer it (503 if it cannot be logged).

        ``extra`` facts go into the record; an exception that is no refusal is raised.
        """
        refusal = classify(exc)
        headers: dict[str, str] = {}
        if refusal.status == 429:
            headers["Retry-After"] = "5"
        if isinstance(exc, RangeNotSatisfiable) and exc.size is not None:
            extra["object_size"] = exc.size
            headers["Content-Range"] = f"bytes */{exc.size}"
        event = record.event(
            refusal.outcome,
            "refused",
            status=refusal.status,
            reason=refusal.reason,
            allow=refusal.allow,
            **extra,
        )
        _log.info(
            "refused", request_id=record.request_id, status=refusal.status, reason=refusal.reason
        )
        count_refusal(refusal.reason, refusal.status)
        if not await self.append(record, event):
            return self.unavailable(record, "nothing was sent or stored")
        return error_response(record, refusal.status, refusal.reason, str(exc), headers)

    # -- admission --------------------------------------------------------------------

    async def authenticate(
        self, record: RequestRecord, raw_path: bytes, credentials: str | None
    ) -> Identity:
        """Who sent the request (TokenReview); also refuses an ambiguous raw path."""
        identity = self.reviewer.cached(credentials)
        if identity is None:
            identity = await to_thread(self.reviewer.review, credentials)
        record.identity = identity
        check_raw_path(raw_path)
        return identity

    async def _decide(self, record: RequestRecord, check: Callable[..., _T], *args: str) -> _T:
        """Run a grant resolver ``check``: from its cache on the event loop, or in a thread
        when it must read the API server. A refusal names the sandbox in ``record``."""
        try:
            try:
                return check(*args, cached_only=True)
            except NotCached:
                return await to_thread(functools.partial(check, *args))
        except Forbidden as exc:
            record.sandbox = exc.sandbox
            raise

    async def admit_read(
        self, record: RequestRecord, raw_path: bytes, credentials: str | None
    ) -> Grant:
        """The grant for the token's sandbox to read dataset ``record.name``, or a refusal."""
        identity = await self.authenticate(record, raw_path, credentials)
        if len(record.name) > 253 or not _DATASET_NAME.match(record.name):
            raise InvalidKey("invalid dataset name")
        grant = await self._decide(record, self.grants.authorize, identity.namespace, record.name)
        record.sandbox = grant.sandbox
        return grant

    async def active_sandbox(self, record: RequestRecord, identity: Identity) -> SandboxRef:
        """The token's sandbox, if it may act now (Ready, unexpired, not being deleted)."""
        ref = (await self._decide(record, self.grants.active, identity.namespace))[0]
        record.sandbox = ref
        return ref

    # -- write slots ------------------------------------------------------------------

    @property
    def writes_under_way(self) -> int:
        """Outbox writes holding a slot now (touched only on the event loop: no lock)."""
        return self._writes

    @contextmanager
    def write_slot(self) -> Iterator[None]:
        """Hold one of the ``outbox_max_writes`` slots; TooManyWrites if none is free."""
        if self._writes >= self.outbox_max_writes:
            raise TooManyWrites(
                f"the gateway is already taking {self._writes} writes; retry in a few seconds"
            )
        self._writes += 1
        try:
            yield
        finally:
            self._writes -= 1
