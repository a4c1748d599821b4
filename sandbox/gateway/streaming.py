"""Audited streaming: an object's bytes go out only as fast as the audit log allows.

A read larger than one chunk is answered by :class:`AuditedStream`, after its
``started`` record is durable. It holds back the last chunk until the ``completed``
record (bytes, SHA-256) is durable too; if that append fails, the connection is aborted,
so the client sees a body shorter than its Content-Length and never a complete,
unlogged response. A client that goes away, or storage that fails mid-object, still
gets a ``completed`` record saying how many bytes were sent and why it stopped.
"""

from __future__ import annotations

import email.utils
import hashlib
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from audit.client import AuditSink, AuditUnavailable
from audit.entry import Outcome
from sandbox.errors import SandboxError
from sandbox.gateway.metrics import APPEND_FAILURES, STREAMS_ABORTED
from sandbox.gateway.records import RequestRecord
from sandbox.gateway.s3 import ObjectStream, StorageUnavailable

__all__ = ["AuditedStream", "StreamAborted", "object_headers"]

_log = structlog.get_logger("regsandbox.gateway")

_Ending = Literal["complete", "aborted", "stopped"]


class StreamAborted(SandboxError):  # noqa: N818 - what happened to the stream
    """A streamed read was cut off (storage failed or the audit log refused the record)."""


def _http_date(value: datetime | None) -> str | None:
    if value is None or value.tzinfo is None:
        return None
    return email.utils.format_datetime(value.astimezone(UTC), usegmt=True)


def object_headers(
    stream_or_size: ObjectStream | int, etag: str, modified: datetime | None
) -> dict[str, str]:
    """Headers of an object answer: length (and range) of ``stream_or_size``, ETag, date."""
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


class AuditedStream(Response):
    """Streams an object, holding back the last chunk until the final record is durable.

    A reader task fills a one-slot channel, so at most three chunks are in memory (one
    being read, one waiting, one being sent): memory stays flat, and storage reads and
    hashing overlap with the network.
    """

    def __init__(
        self,
        audit: AuditSink,
        record: RequestRecord,
        stream: ObjectStream,
        headers: dict[str, str],
        status_code: int,
        *,
        whole: bool,
        chunk_bytes: int,
    ) -> None:
        super().__init__(
            status_code=status_code, headers=headers, media_type="application/octet-stream"
        )
        self._audit = audit
        self._record = record
        self._stream = stream
        self._whole = whole
        self._chunk_bytes = chunk_bytes
        self._hasher = hashlib.sha256()
        self._failures: list[BaseException] = []
        self._sent = 0

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

    async def _send_body(self, send: Send, gone: anyio.Event) -> None:
        """Stream the body; record how it ended, whatever happens."""
        chunks_in, chunks_out = anyio.create_memory_object_stream[bytes](max_buffer_size=1)
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        try:
            async with anyio.create_task_group() as tasks, chunks_out:
                tasks.start_soon(self._read_into, chunks_in)
                ending = await self._relay(chunks_out, send, gone)
                if ending == "complete":
                    return
                tasks.cancel_scope.cancel()
            if ending == "aborted":  # raised outside the task group, so it is not wrapped
                raise StreamAborted("the audit log refused the completion record")
            storage_failed = [f for f in self._failures if isinstance(f, StorageUnavailable)]
            if storage_failed and not gone.is_set():
                raise storage_failed[0]
        except StorageUnavailable as exc:
            _log.warning(
                "storage failed mid-stream", request_id=self._record.request_id, error=str(exc)
            )
            STREAMS_ABORTED.labels("StorageUnavailable").inc()
            await self._finish_quietly("failure", 502, "StorageUnavailable")
            raise StreamAborted(str(exc)) from None
        except BaseException:
            if self._sent < self._stream.length:  # cancelled, or a bug: still record it
                await self._finish_quietly("failure", self.status_code, "Aborted")
            raise
        await self._finish_quietly("failure", self.status_code, "ClientDisconnected")

    async def _read_into(self, chunks: MemoryObjectSendStream[bytes]) -> None:
        """Read (and hash) the object chunk by chunk into ``chunks``, in worker threads."""
        stream, total, got = self._stream, self._stream.length, 0

        def read(size: int) -> bytes:
            data = stream.read(size)
            self._hasher.update(data)  # hashlib releases the GIL on large buffers
            return data

        async with chunks:
            try:
                while got < total:
                    chunk = await anyio.to_thread.run_sync(
                        read, min(self._chunk_bytes, total - got)
                    )
                    if not chunk:
                        raise StorageUnavailable(
                            f"storage ended the object after {got} of {total} bytes"
                        )
                    got += len(chunk)
                    await chunks.send(chunk)
            except (
                StorageUnavailable,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
            ) as exc:
                self._failures.append(exc)

    async def _relay(
        self, chunks: MemoryObjectReceiveStream[bytes], send: Send, gone: anyio.Event
    ) -> _Ending:
        """Send the chunks as they come; the last only once its record is durable."""
        total = self._stream.length
        async for chunk in chunks:
            last = self._sent + len(chunk) >= total
            if gone.is_set():
                return "stopped"
            if last and not await self._log_completion():
                return "aborted"
            try:
                await send({"type": "http.response.body", "body": chunk, "more_body": not last})
            except OSError:
                gone.set()
                return "stopped"
            self._sent += len(chunk)
            if last:
                return "complete"
        return "stopped"

    async def _log_completion(self) -> bool:
        """Append the ``completed`` record of a whole answer; False if the log refused."""
        digest = self._hasher.hexdigest()
        try:
            await self._finish("success", self.status_code, None, self._stream.length, digest)
        except AuditUnavailable as exc:
            APPEND_FAILURES.inc()
            STREAMS_ABORTED.labels("AuditUnavailable").inc()
            _log.error(
                "audit append failed; aborting stream",
                request_id=self._record.request_id,
                error=str(exc),
            )
            return False
        return True

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
            await anyio.to_thread.run_sync(self._audit.append, [event])

    async def _finish_quietly(self, outcome: Outcome, status: int, reason: str) -> None:
        try:
            await self._finish(outcome, status, reason, self._sent, None)
        except AuditUnavailable as exc:
            APPEND_FAILURES.inc()
            _log.error("audit append failed", request_id=self._record.request_id, error=str(exc))
