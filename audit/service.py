"""HTTP API of the audit log: authenticated appends, reads for those allowed.

Routes (all under ``/v1``):

========================================  ==================================================
``POST /v1/entries``                      append a batch (writers only); JSON
                                          ``{"events": [...]}`` in, ``{"indices": [...]}`` out
``GET /v1/checkpoint``                    the latest signed checkpoint note, ``text/plain``
``GET /v1/entries/{index}``               one entry's exact bytes (``application/json``)
``GET /v1/entries?start=&end=``           entries ``[start, end)``, each followed by ``\\n``
                                          (``application/x-ndjson``; canonical JSON has no
                                          raw newline, so each line is the exact bytes)
``GET /v1/proof/inclusion?index=&size=``  RFC 6962 inclusion proof, JSON, base64 hashes
``GET /v1/proof/consistency?old=&new=``   RFC 6962 consistency proof, JSON, base64 hashes
``GET /v1/receipt/{index}``               a C2SP tlog-proof for the entry, ``text/plain``
========================================  ==================================================

Access uses bearer tokens. Token files hold one ``<sha256 hex of token> <identity>``
line per token (``#`` starts a comment), so the service never stores a token itself;
tokens are compared in constant time and never logged. Writers may also read. Reads are
open to anyone only when configured so.

An append answers only after the log reports the batch durable; if the log fails, the
answer is 503 and the client must treat the events as not logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from audit.checkpoint import Checkpoint
from audit.entry import Event, encode_entry
from audit.errors import AuditError, MalformedError, StorageError
from audit.note import Note, b64encode
from audit.proof import TlogProof

__all__ = [
    "MAX_BATCH",
    "MAX_BODY_BYTES",
    "MAX_RANGE",
    "AccessPolicy",
    "LogBackend",
    "create_app",
    "load_tokens",
    "token_digest",
]

MAX_BATCH = 10_000
"""Most events accepted in one append."""

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest append body accepted, in bytes."""

MAX_RANGE = 1_000
"""Most entries returned by one range read."""

_LARGEST_INDEX = 2**53 - 1
_log = structlog.get_logger("audit.service")


class LogBackend(Protocol):
    """What the service needs from the log; :class:`audit.log.AuditLog` provides it."""

    @property
    def size(self) -> int:
        """Number of durable entries (some may not be in a checkpoint yet)."""
        ...

    @property
    def checkpoint_note(self) -> bytes:
        """The latest signed checkpoint note."""
        ...

    def append_batch(self, events: Sequence[Event]) -> list[int]:
        """Append events as one batch; return their indices once all are durable."""
        ...

    def publish_checkpoint(self) -> bytes:
        """Sign a checkpoint covering every durable entry now; return it."""
        ...

    def entry_bytes(self, index: int) -> bytes:
        """The exact stored bytes of entry ``index``."""
        ...

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of ``index`` in the tree of ``size`` entries."""
        ...

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof from ``old_size`` to ``new_size`` entries."""
        ...


def token_digest(token: str) -> str:
    """The lowercase hex SHA-256 of a token, as written in token files."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(path: Path) -> dict[str, str]:
    """Read a token file: ``<sha256 hex> <identity>`` per line; ``#`` comments, blanks.

    Raises :class:`~audit.errors.MalformedError` naming the bad line (never echoing it).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"cannot read token file {path}: {exc.strerror}") from exc
    tokens: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise MalformedError(f"{path} line {number}: want '<sha256 hex> <identity>'")
        digest, identity = parts
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise MalformedError(f"{path} line {number}: not a lowercase hex SHA-256")
        if digest in tokens:
            raise MalformedError(f"{path} line {number}: the same token is listed twice")
        tokens[digest] = identity
    return tokens


@dataclass(frozen=True)
class AccessPolicy:
    """Who may append and who may read."""

    writers: Mapping[str, str]
    """Token SHA-256 (hex) to identity, for components allowed to append (and read)."""
    readers: Mapping[str, str]
    """Token SHA-256 (hex) to identity, for those allowed to read only."""
    open_reads: bool = False
    """Whether reads need no token at all."""

    def identify(self, token: str, tokens: Mapping[str, str]) -> str | None:
        """The identity of ``token`` in ``tokens``, compared in constant time."""
        presented = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for digest, identity in tokens.items():
            if hmac.compare_digest(presented, bytes.fromhex(digest)):
                found = identity
        return found


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _challenge(status: int, detail: str, error: str | None = None) -> HTTPException:
    value = 'Bearer realm="regsandbox-audit"'
    if error:
        value += f', error="{error}"'
    return HTTPException(status, detail, headers={"WWW-Authenticate": value})


def _authorize(policy: AccessPolicy, request: Request, *, write: bool) -> str:
    """The caller's identity, or raise 401 (no or unknown token) / 403 (not allowed)."""
    token = _bearer(request)
    if token is None:
        if not write and policy.open_reads:
            return "anonymous"
        raise _challenge(401, "a bearer token is required")
    writer = policy.identify(token, policy.writers)
    reader = policy.identify(token, policy.readers)
    if writer is not None:
        return writer
    if reader is not None:
        if write:
            raise _challenge(403, "this token may read but not append", "insufficient_scope")
        return reader
    if not write and policy.open_reads:
        return "anonymous"
    raise _challenge(401, "unknown bearer token", "invalid_token")


def _parse_events(body: bytes) -> list[Event]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(400, f"body is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise HTTPException(400, 'body must be a JSON object {"events": [...]}')
    raw_events: list[Any] = document["events"]
    if not raw_events:
        raise HTTPException(400, "a batch needs at least one event")
    if len(raw_events) > MAX_BATCH:
        raise HTTPException(413, f"a batch holds at most {MAX_BATCH} events")
    events: list[Event] = []
    for position, raw in enumerate(raw_events):
        try:
            event = Event.model_validate(raw)
            encode_entry(event, _LARGEST_INDEX)  # refuse what could be too large anywhere
        except ValidationError as exc:
            raise HTTPException(422, f"event {position} is invalid: {exc}") from None
        except MalformedError as exc:
            raise HTTPException(422, f"event {position}: {exc}") from None
        events.append(event)
    return events


def _hashes(hashes: Sequence[bytes]) -> list[str]:
    return [b64encode(h) for h in hashes]


def create_app(log: LogBackend, policy: AccessPolicy) -> FastAPI:
    """The FastAPI application serving ``log`` under ``policy``."""
    app = FastAPI(title="regsandbox audit log", docs_url=None, redoc_url=None)

    @app.exception_handler(IndexError)
    async def out_of_range(request: Request, exc: IndexError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(AuditError)
    async def unreadable(request: Request, exc: AuditError) -> JSONResponse:
        _log.error("read failed", path=request.url.path, error=str(exc))
        return JSONResponse({"detail": "the log cannot be read right now"}, status_code=503)

    def current() -> tuple[bytes, Checkpoint]:
        note = log.checkpoint_note
        return note, Checkpoint.from_text(Note.parse(note).text)

    async def read_state(request: Request) -> tuple[bytes, Checkpoint]:
        _authorize(policy, request, write=False)
        return await run_in_threadpool(current)

    @app.post("/v1/entries")
    async def append(request: Request) -> JSONResponse:
        """Append a batch; answer once it is durable."""
        identity = _authorize(policy, request, write=True)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body is over {MAX_BODY_BYTES} bytes")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, f"body is over {MAX_BODY_BYTES} bytes")
        events = _parse_events(body)
        try:
            indices = await run_in_threadpool(log.append_batch, events)
        except MalformedError as exc:
            _log.warning("append refused", writer=identity, events=len(events), error=str(exc))
            raise HTTPException(422, str(exc)) from None
        except (AuditError, OSError) as exc:
            _log.error("append failed", writer=identity, events=len(events), error=str(exc))
            raise HTTPException(503, "the log could not make the batch durable") from None
        if len(indices) != len(events):
            _log.error("append returned a wrong count", writer=identity, events=len(events))
            raise HTTPException(503, "the log did not confirm every event")
        _log.info("appended", writer=identity, events=len(events), first=indices[0])
        return JSONResponse({"indices": indices})

    @app.get("/v1/checkpoint")
    async def checkpoint(request: Request) -> Response:
        """The latest signed checkpoint."""
        note, _ = await read_state(request)
        return Response(
            note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    @app.get("/v1/entries/{index}")
    async def entry(request: Request, index: int) -> Response:
        """One entry, byte-exact."""
        _, cp = await read_state(request)
        if not 0 <= index < cp.size:
            raise HTTPException(404, f"no entry {index} in the checkpointed log of {cp.size}")
        data = await run_in_threadpool(log.entry_bytes, index)
        return Response(data, media_type="application/json")

    @app.get("/v1/entries")
    async def entries(request: Request, start: int, end: int) -> Response:
        """Entries ``[start, end)``, one per line."""
        _, cp = await read_state(request)
        if not 0 <= start < end <= cp.size:
            raise HTTPException(404, f"range [{start}, {end}) is not in a log of {cp.size}")
        if end - start > MAX_RANGE:
            raise HTTPException(400, f"at most {MAX_RANGE} entries per request")

        def read() -> bytes:
            return b"".join(log.entry_bytes(i) + b"\n" for i in range(start, end))

        return Response(await run_in_threadpool(read), media_type="application/x-ndjson")

    @app.get("/v1/proof/inclusion")
    async def inclusion(request: Request, index: int, size: int | None = None) -> JSONResponse:
        """Inclusion proof for ``index`` in the tree of ``size`` (default: checkpoint)."""
        _, cp = await read_state(request)
        tree = cp.size if size is None else size
        if not 0 <= index < tree <= cp.size:
            raise HTTPException(404, f"no index {index} in a tree of {tree} (log: {cp.size})")
        proof = await run_in_threadpool(log.inclusion_proof, index, tree)
        return JSONResponse({"index": index, "size": tree, "hashes": _hashes(proof)})

    @app.get("/v1/proof/consistency")
    async def consistency(request: Request, old: int, new: int | None = None) -> JSONResponse:
        """Consistency proof from ``old`` to ``new`` (default: checkpoint) entries."""
        _, cp = await read_state(request)
        tree = cp.size if new is None else new
        if not 0 < old <= tree <= cp.size:
            raise HTTPException(404, f"no proof from {old} to {tree} (log: {cp.size})")
        proof = await run_in_threadpool(log.consistency_proof, old, tree)
        return JSONResponse({"old": old, "new": tree, "hashes": _hashes(proof)})

    @app.get("/v1/receipt/{index}")
    async def receipt(request: Request, index: int) -> Response:
        """A C2SP tlog-proof of entry ``index`` against the latest checkpoint.

        An entry that is durable but not yet in a checkpoint gets one signed now, so a
        writer can ask for a receipt right after its append.
        """
        note, cp = await read_state(request)
        if 0 <= index < log.size and index >= cp.size:
            note = await run_in_threadpool(log.publish_checkpoint)
            cp = Checkpoint.from_text(Note.parse(note).text)
        if not 0 <= index < cp.size:
            raise HTTPException(404, f"no entry {index} in the log of {cp.size}")
        proof = await run_in_threadpool(log.inclusion_proof, index, cp.size)
        body = TlogProof(index, tuple(proof), note).to_bytes()
        return Response(body, media_type="text/plain; charset=utf-8")

    @app.get("/healthz")
    async def healthz() -> Response:
        """Liveness: the process answers."""
        return Response("ok\n", media_type="text/plain")

    return app
