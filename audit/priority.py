"""Appends first: reads of the log wait while appends are in flight, for a bounded time.

Writers block on their appends (an operator or a gateway waits until its entry is
durable before it goes on), readers page through the log at their own pace. In the audit
service both share one process, so one interpreter lock and the same CPUs: a reader
paging through the whole log as fast as it can would take a share of both from every
writer. :class:`AppendsFirst`, an ASGI middleware, gives appends the right of way:

- an append (``POST /v1/entries``) is counted while it is handled, answer included;
- a read of the log (``GET``/``HEAD`` under ``/v1/`` or ``/tlog/``) starts only when no
  append is in flight, or after ``max_wait`` seconds at the latest, so readers are slowed
  by a busy writer, never stopped. Health, status and metrics are not delayed.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AppendsFirst"]

_READ_PREFIXES = ("/v1/", "/tlog/")


class AppendsFirst:
    """ASGI middleware: log reads wait (up to ``max_wait`` s) while appends are in flight."""

    def __init__(self, app: ASGIApp, max_wait: float = 0.25) -> None:
        if max_wait < 0:
            raise ValueError("max_wait is a number of seconds, at least 0")
        self.app = app
        """The application served."""
        self.max_wait = max_wait
        """Longest a read waits for appends to finish, in seconds."""
        self._appending = 0
        self._waiting: list[asyncio.Future[None]] = []

    @property
    def appending(self) -> int:
        """Appends being handled now."""
        return self._appending

    @property
    def waiting(self) -> int:
        """Reads waiting for their turn now."""
        return len(self._waiting)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == "/v1/entries":
                await self._append(scope, receive, send)
                return
            if method in ("GET", "HEAD") and path.startswith(_READ_PREFIXES):
                await self.read_turn()
        await self.app(scope, receive, send)

    async def _append(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._appending += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self._appending -= 1
            if self._appending == 0:
                waiting, self._waiting = self._waiting, []
                for turn in waiting:
                    if not turn.done():
                        turn.set_result(None)

    async def read_turn(self) -> None:
        """Return once no append is in flight, or after :attr:`max_wait` seconds."""
        if self._appending == 0:
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            await asyncio.wait({turn}, timeout=self.max_wait)
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(turn)
