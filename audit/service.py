"""HTTP API of the audit log: authenticated appends, reads for those allowed.

Routes (all under ``/v1``):

========================================  ==================================================
``POST /v1/entries``                      append a batch (writers only); JSON
                                          ``{"events": [...]}`` in, ``{"indices": [...]}`` out
``GET /v1/checkpoint``                    the latest signed checkpoint note, ``text/plain``
``GET /v1/checkpoint/cosigned``           the latest checkpoint with witness cosignatures
                                          (:mod:`audit.witnessing`); 404 until one exists
``GET /v1/entries/{index}``               one entry's exact bytes (``application/json``)
``GET /v1/entries?start=&end=``           entries ``[start, end)``, each followed by ``\\n``
                                          (``application/x-ndjson``; canonical JSON has no
                                          raw newline, so each line is the exact bytes)
``GET /v1/proof/inclusion?index=&size=``  RFC 6962 inclusion proof, JSON, base64 hashes
``GET /v1/proof/consistency?old=&new=``   RFC 6962 consistency proof, JSON, base64 hashes
``GET /v1/receipt/{index}``               a C2SP tlog-proof for the entry, ``text/plain``
``GET /v1/tenants/{t}/…``                 one tenant's slice, with proofs (below)
``GET /tlog/checkpoint``, ``/tlog/tile/…``  the whole log as C2SP tlog-tiles (:mod:`audit.tiles`)
``GET /v1/status``                        conditions (``AnchorConsistent``, ``Writable``,
                                          ``Witnessed``), JSON, no token needed
``GET /healthz``                          200 while the log can append and sign; 503 with
                                          the failing condition otherwise
``GET /metrics``                          Prometheus metrics
``/console/…``                            the read-only web console for compliance officers
                                          (:mod:`audit.console`): the same read check as
                                          above, per page, for the page's scope
========================================  ==================================================

Access uses bearer tokens. Appends need a writer's token: in Kubernetes the writer's own
projected ServiceAccount token, checked by TokenReview against the identities the service
is given (``--kube-writer``), so there is no shared secret to create or rotate; or, as the
explicit fallback, a token from a token file: one ``<sha256 hex of token> <identity>``
line per token (``#`` starts a comment), so the service never stores a token itself;
tokens are compared in constant time and never logged.

Reads are authorised per :class:`~audit.access.Scope`: a reader authority
(:mod:`audit.access`; in Kubernetes, TokenReview and SubjectAccessReview) says who a token
belongs to and whether they may ``get`` or ``list`` in the whole log or one tenant's
slice. Writer tokens and the tokens of a readers file (the explicit fallback) read the
whole log; reads are open to anyone only when configured so.

Tenant-scoped routes (``{t}`` a tenant name; entries are a tenant's when their
``resource.tenant`` names it; every proof is against the current checkpoint):

==============================================  ============================================
``GET /v1/tenants/{t}/checkpoint``              the latest signed checkpoint
``GET /v1/tenants/{t}/entries?start=&limit=``   the tenant's entries from index ``start``,
                                                each with its inclusion proof; JSON, with
                                                ``next`` to page on
``GET /v1/tenants/{t}/entries/{index}``         one entry with its inclusion proof; 403 if
                                                it is another tenant's
``GET /v1/tenants/{t}/proof/inclusion?index=``  as ``/v1/proof/inclusion``, own entries only
``GET /v1/tenants/{t}/proof/consistency``       as ``/v1/proof/consistency``
``GET /v1/tenants/{t}/receipt/{index}``         a C2SP tlog-proof, own entries only
==============================================  ============================================

A tenant's reader learns the tree size and hashes of the whole log (they are in every
checkpoint and proof) but no byte of another tenant's entries: leaf hashes are
salted by each entry's random nonce.

An append answers only after the log reports the batch durable; if the log fails, the
answer is 503 and the client must treat the events as not logged.

Reads can be served by a process of their own instead (:mod:`audit.read_server`, ``audit
serve --read-listen``): the read routes are the same code (:func:`add_read_routes`), and
this listener then serves writers only (:attr:`AccessPolicy.reads_at`).

A log that is not consistent with its checkpoint anchor (:mod:`audit.anchor`) is never
opened for writing: :func:`create_refusing_app` then answers every ``/v1`` request with
503, ``/healthz`` and ``/v1/status`` with the reason, and the metric
``regsandbox_audit_anchor_consistent`` is 0.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from audit.access import (
    AccessUnavailable,
    Reader,
    ReaderAuthority,
    Scope,
    Verb,
    check_tenant_name,
)
from audit.checkpoint import Checkpoint
from audit.client_certs import CertificateRefused, verified_client_reader
from audit.console import CheckpointHistory, ConsoleSettings, ConsoleSource, mount_console
from audit.entry import Event, encode_entry
from audit.errors import AnchorConflictError, AnchorMismatchError, AuditError, MalformedError
from audit.metrics import HttpMetrics, LogMetrics
from audit.note import Note, b64encode
from audit.proof import TlogProof
from audit.signing import read_key_text
from audit.tenants import TenantIndex
from audit.tiles import entry_bundle, hash_tile, parse_tile_path, tile_width
from audit.witnessing import Witnessing, WitnessingMetrics

__all__ = [
    "MAX_BATCH",
    "MAX_BODY_BYTES",
    "MAX_RANGE",
    "MAX_TOKEN_BYTES",
    "AccessPolicy",
    "LogBackend",
    "LogStatus",
    "ReadBackend",
    "ReadGate",
    "ServiceMetrics",
    "TileSource",
    "add_read_routes",
    "authorize_read",
    "create_app",
    "create_refusing_app",
    "load_tokens",
    "token_digest",
]

MAX_BATCH = 10_000
"""Most events accepted in one append."""

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest append body accepted, in bytes."""

MAX_RANGE = 1_000
"""Most entries returned by one range read."""

MAX_TOKEN_BYTES = 16 * 1024
"""Longest bearer token looked at; a longer one is refused without asking anyone."""

_LARGEST_INDEX = 2**53 - 1
_log = structlog.get_logger("audit.service")


class ReadBackend(Protocol):
    """What the read routes need from the log: :class:`audit.log.AuditLog` (the writer's
    own view) or :class:`audit.read_server.PublishedLog` (the durable files, as of the
    checkpoint the writer last published)."""

    @property
    def size(self) -> int:
        """Number of durable entries (some may not be in a checkpoint yet)."""
        ...

    @property
    def checkpoint_note(self) -> bytes:
        """The latest signed checkpoint note."""
        ...

    def entry_bytes(self, index: int) -> bytes:
        """The exact stored bytes of entry ``index``."""
        ...

    def entry_range(self, start: int, end: int) -> list[bytes]:
        """The exact stored bytes of entries ``[start, end)`` (cheaper than one by one)."""
        ...

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of ``index`` in the tree of ``size`` entries."""
        ...

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof from ``old_size`` to ``new_size`` entries."""
        ...


class LogBackend(ReadBackend, Protocol):
    """What the service needs from the log; :class:`audit.log.AuditLog` provides it."""

    def append_batch(self, events: Sequence[Event]) -> list[int]:
        """Append events as one batch; return their indices once all are durable."""
        ...

    def publish_checkpoint(self) -> bytes:
        """Sign a checkpoint covering every durable entry now; return it."""
        ...


class ReadGate(Protocol):
    """The read check of one listener: the reader, allowed ``verb`` in ``scope``, and
    (on a read server) within their rate for ``cost`` entries; raises 401/403/429/503."""

    async def __call__(
        self, request: Request, scope: Scope, verb: Verb, cost: int = 1
    ) -> Reader:  # pragma: no cover - a protocol
        """Authorise the read, or raise :class:`~fastapi.HTTPException`."""
        ...


@runtime_checkable
class LogStatus(Protocol):
    """What a backend may tell about its health (:class:`audit.log.AuditLog` does)."""

    @property
    def broken(self) -> BaseException | None:
        """Why the log stopped accepting appends, or ``None``."""
        ...

    @property
    def anchored_checkpoint(self) -> Checkpoint | None:
        """The checkpoint held by the log's anchor, or ``None`` without one."""
        ...


@runtime_checkable
class TileSource(Protocol):
    """A backend that can serve tlog-tiles (:class:`audit.log.AuditLog` can)."""

    def subtree_hash(self, level: int, n: int) -> bytes:
        """Hash of the complete subtree of leaves ``[n * 2**level, (n + 1) * 2**level)``."""
        ...


@dataclass
class ServiceMetrics:
    """The service's Prometheus metrics, in a registry of their own (served at /metrics)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    """Registry holding every metric below; other parts of the service may add theirs."""

    def __post_init__(self) -> None:
        self.anchor_consistent = Gauge(
            "regsandbox_audit_anchor_consistent",
            "1 while the log extends the checkpoint held by its anchor, 0 once it does not "
            "(the service then signs and appends nothing).",
            registry=self.registry,
        )
        """1 consistent, 0 refused."""
        self.anchor_mismatches = Counter(
            "regsandbox_audit_anchor_mismatches",
            "Times the log was found inconsistent with its checkpoint anchor.",
            registry=self.registry,
        )
        """Mismatches seen."""
        self.anchored_size = Gauge(
            "regsandbox_audit_anchored_tree_size",
            "Tree size of the checkpoint held by the anchor.",
            registry=self.registry,
        )
        """Size of the anchored checkpoint."""
        self.appends_refused = Counter(
            "regsandbox_audit_appends_refused",
            "Append requests answered 503 because the log could not make them durable.",
            registry=self.registry,
        )
        """Failed appends."""
        self._mismatch_counted = False

    def mismatch_found(self) -> None:
        """Set the anchor gauge to 0 and count the mismatch, once however often it is seen.

        A log found inconsistent stays stopped (it keeps failing each checkpoint with a
        new error), so there is one mismatch to count per service.
        """
        self.anchor_consistent.set(0)
        if not self._mismatch_counted:
            self._mismatch_counted = True
            self.anchor_mismatches.inc()


def _condition(type_: str, ok: bool, reason: str, message: str) -> dict[str, str]:
    return {
        "type": type_,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
    }


def _log_conditions(log: LogBackend, metrics: ServiceMetrics) -> list[dict[str, str]]:
    if not isinstance(log, LogStatus):
        return [_condition("Writable", True, "Appending", "the log accepts appends")]
    conditions = []
    broken = log.broken
    anchored = log.anchored_checkpoint
    if isinstance(broken, AnchorMismatchError | AnchorConflictError):
        reason = (
            broken.reason if isinstance(broken, AnchorMismatchError) else "CheckpointAnchorChanged"
        )
        metrics.mismatch_found()
        conditions.append(_condition("AnchorConsistent", False, reason, str(broken)))
    elif anchored is not None:
        metrics.anchor_consistent.set(1)
        metrics.anchored_size.set(anchored.size)
        conditions.append(
            _condition(
                "AnchorConsistent",
                True,
                "LogExtendsAnchor",
                f"the log extends the anchored checkpoint of size {anchored.size}",
            )
        )
    if broken is not None:
        conditions.append(_condition("Writable", False, "LogStopped", f"the log stopped: {broken}"))
    else:
        conditions.append(_condition("Writable", True, "Appending", "the log accepts appends"))
    return conditions


_CRITICAL = ("AnchorConsistent", "Writable")
"""Conditions that make the service unready when False (witnessing only informs)."""


def _witness_condition(witnessing: Witnessing) -> dict[str, str]:
    status = witnessing.status()
    refused = {name: s.refused for name, s in status.items() if s.refused}
    failing = {name: s.error for name, s in status.items() if s.error}
    if refused:
        name, why = next(iter(refused.items()))
        return _condition("Witnessed", False, "WitnessRefused", f"{name}: {why}")
    if failing:
        name, why = next(iter(failing.items()))
        return _condition("Witnessed", False, "WitnessUnavailable", f"{name}: {why}")
    sizes = ", ".join(f"{name} at {s.cosigned_size}" for name, s in status.items())
    return _condition("Witnessed", True, "Cosigned", f"cosigned by {sizes}")


def _status_response(conditions: list[dict[str, str]]) -> JSONResponse:
    ok = all(c["status"] == "True" for c in conditions if c["type"] in _CRITICAL)
    return JSONResponse({"ok": ok, "conditions": conditions}, status_code=200 if ok else 503)


def _metrics_response(metrics: ServiceMetrics) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def token_digest(token: str) -> str:
    """The lowercase hex SHA-256 of a token, as written in token files."""
    return hashlib.sha256(token.encode()).hexdigest()


def load_tokens(path: Path) -> dict[str, str]:
    """Read a token file: ``<sha256 hex> <identity>`` per line; ``#`` comments, blanks.

    Raises :class:`~audit.errors.MalformedError` naming the bad line (never echoing it).
    """
    text = read_key_text(path, "token file")
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
    authority: ReaderAuthority | None = None
    """Who else may read, and how much (e.g. Kubernetes identities; :mod:`audit.access`)."""
    kube_writers: frozenset[str] = frozenset()
    """Identities (e.g. ``system:serviceaccount:<ns>:<name>``) that may append with a token
    :attr:`writer_authority` authenticates — no shared secret to create or rotate."""
    writer_authority: ReaderAuthority | None = None
    """Who is behind a writer's token (a TokenReview); only its ``authenticate`` is used."""
    client_certificates: bool = False
    """Whether a TLS client certificate the server verified (ASGI TLS extension;
    :mod:`audit.client_certs`) identifies a reader: CN the user, O the groups, each read
    authorised by :attr:`authority`. A certificate never appends, and one naming a
    :attr:`kube_writers` identity gets no whole-log read for it: the CA names any user
    it signs, and writers append with the token the API server vouches for. Enable it
    only behind a server that verifies client certificates."""

    reads_at: str | None = None
    """Set on the append listener when reads have a listener of their own (the read
    server, :mod:`audit.read_server`): where that is, e.g. ``port 8081``. This listener
    then serves reads to writers only (their receipts and checkpoints) and refuses
    everyone else with 403 naming it, so no reader bypasses the read server's lower
    priority and rate bound by asking the writer."""

    def __post_init__(self) -> None:
        if self.client_certificates and self.authority is None:
            raise ValueError("client certificates need a reader authority to authorise reads")

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


_WHOLE_LOG = Scope()


async def authorize_read(
    policy: AccessPolicy, request: Request, scope: Scope, verb: Verb
) -> Reader:
    """The reader, allowed to ``verb`` in ``scope``; or raise 401, 403 or 503.

    Static tokens (writers, the readers file) and open reads see the whole log; any other
    token goes to the reader authority, which fails closed: if it cannot answer, 503. A
    verified client certificate, when enabled, comes first (as in kube-apiserver) and is
    authorised by the same authority.
    """
    certified = _certified(policy, request)
    if certified is not None:
        return await _authorized(policy, certified, scope, verb, writers=False)
    token = _bearer(request)
    anonymous = Reader("anonymous", whole_log=True)
    if token is None:
        if policy.open_reads:
            return anonymous
        raise _challenge(401, "a bearer token is required")
    if len(token) > MAX_TOKEN_BYTES or not token.isascii() or not token.isprintable():
        raise _challenge(401, "the bearer token is malformed", "invalid_token")
    static = policy.identify(token, policy.writers) or policy.identify(token, policy.readers)
    if static is not None:
        return Reader(static, whole_log=True)
    if policy.authority is None and policy.writer_authority is not None:
        # Writers read what they appended (receipts) with the token they append with.
        writer = await _kube_writer(policy, token, "read")
        if writer is not None:
            return Reader(writer, whole_log=True)
    authority = policy.authority
    reader = None
    try:
        if authority is not None:
            reader = await run_in_threadpool(authority.authenticate, token)
    except AccessUnavailable as exc:
        _log.warning("read not authorised: authority unavailable", error=str(exc))
        raise HTTPException(503, "cannot check the caller's access right now; retry") from None
    if reader is None:
        if policy.open_reads:
            return anonymous
        raise _challenge(401, "unknown bearer token", "invalid_token")
    return await _authorized(policy, reader, scope, verb)


async def _writer_read(policy: AccessPolicy, request: Request, reads_at: str) -> Reader:
    """A writer reading on the append listener; anyone else is sent to ``reads_at``.

    Only writer tokens (the writers file, or a Kubernetes writer by TokenReview) pass;
    the reader authority is never asked here, so a reader's token costs the writer no
    review either.
    """
    refused = _challenge(
        403,
        f"this listener serves the log's writers; read the log on the read server ({reads_at})",
        "insufficient_scope",
    )
    token = _bearer(request)
    if token is None:
        raise refused
    if len(token) > MAX_TOKEN_BYTES or not token.isascii() or not token.isprintable():
        raise _challenge(401, "the bearer token is malformed", "invalid_token")
    writer = policy.identify(token, policy.writers)
    if writer is None and policy.writer_authority is not None:
        writer = await _kube_writer(policy, token, "read")
    if writer is None:
        raise refused
    return Reader(writer, whole_log=True)


def _certified(policy: AccessPolicy, request: Request) -> Reader | None:
    """The reader of a verified client certificate, if enabled and presented; else None.

    A presented certificate that names no acceptable user is refused with 401, never
    read as anonymous nor passed over for a token.
    """
    if not policy.client_certificates:
        return None
    try:
        return verified_client_reader(request.scope)
    except CertificateRefused as exc:
        raise _challenge(401, str(exc), "invalid_token") from None


async def _authorized(
    policy: AccessPolicy, reader: Reader, scope: Scope, verb: Verb, *, writers: bool = True
) -> Reader:
    """``reader`` if the reader authority lets them ``verb`` in ``scope``; else 403 (503).

    ``writers``: whether a Kubernetes writer's name reads the whole log (not for a name
    only a client certificate vouches for).
    """
    if reader.whole_log or (writers and reader.name in policy.kube_writers):
        return Reader(reader.name, whole_log=True)
    authority = policy.authority
    if authority is None:
        raise _challenge(403, f"{reader.name} may not read here", "insufficient_scope")
    try:
        allowed = await run_in_threadpool(authority.may_read, reader, scope, verb)
    except AccessUnavailable as exc:
        _log.warning("read not authorised: authority unavailable", error=str(exc))
        raise HTTPException(503, "cannot check the caller's access right now; retry") from None
    if not allowed:
        _log.info("read refused", reader=reader.name, scope=str(scope), verb=verb)
        raise _challenge(
            403, f"{reader.name} may not {verb} audit entries of {scope}", "insufficient_scope"
        )
    return reader


async def _authorize_write(policy: AccessPolicy, request: Request) -> str:
    """The writer's identity, or raise 401 (no or unknown token), 403 (may not append)
    or 503 (the token cannot be checked now: fail closed). A verified client certificate
    never appends: it is vouched for only by the CA the service was given, which names
    any user it signs, a writer's included; writers append with their token."""
    token = _bearer(request)
    certified = _certified(policy, request) if token is None else None
    if certified is not None:
        _log.info("append refused: client certificate", caller=certified.name)
        raise _challenge(
            403,
            f"{certified.name} may not append with a client certificate; writers append "
            "with their ServiceAccount token",
            "insufficient_scope",
        )
    if token is None:
        raise _challenge(401, "a bearer token is required")
    if len(token) > MAX_TOKEN_BYTES or not token.isascii() or not token.isprintable():
        raise _challenge(401, "the bearer token is malformed", "invalid_token")
    writer = policy.identify(token, policy.writers)
    if writer is not None:
        return writer
    if policy.identify(token, policy.readers) is not None:
        raise _challenge(403, "this token may read but not append", "insufficient_scope")
    if policy.writer_authority is not None:
        writer = await _kube_writer(policy, token, "append")
        if writer is not None:
            return writer
    raise _challenge(401, "unknown bearer token", "invalid_token")


async def _kube_writer(policy: AccessPolicy, token: str, what: str) -> str | None:
    """The identity behind ``token`` if it is one of the Kubernetes writers.

    ``None`` when the token authenticates to no one; to an append, someone else gets 403.
    An authority that cannot answer means 503: fail closed.
    """
    assert policy.writer_authority is not None
    try:
        who = await run_in_threadpool(policy.writer_authority.authenticate, token)
    except AccessUnavailable as exc:
        _log.warning(f"{what} not authorised: authority unavailable", error=str(exc))
        raise HTTPException(503, "cannot check the caller's token right now; retry") from None
    if who is None:
        return None
    if who.name in policy.kube_writers:
        return who.name
    if what == "append":
        _log.info("append refused", caller=who.name)
        raise _challenge(403, f"{who.name} may not append", "insufficient_scope")
    return None


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as more than ``limit`` bytes arrive.

    Counted while reading, so neither a wrong ``Content-Length`` nor a chunked body makes
    the service buffer more than ``limit`` bytes.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPException(413, f"body is over {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise HTTPException(413, f"body is over {limit} bytes", headers={"Connection": "close"})
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_events(body: bytes) -> list[Event]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HTTPException(400, f"body is not JSON: {exc}") from None
    except RecursionError:
        raise HTTPException(400, "body is JSON nested too deeply") from None
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
        except RecursionError:
            raise HTTPException(422, f"event {position} is nested too deeply") from None
        events.append(event)
    return events


def _hashes(hashes: Sequence[bytes]) -> list[str]:
    return [b64encode(h) for h in hashes]


def create_refusing_app(
    error: AnchorMismatchError, metrics: ServiceMetrics | None = None
) -> FastAPI:
    """The service of a log that must not be opened: 503 everywhere, with the reason.

    Used when the log is not consistent with its checkpoint anchor: nothing is signed or
    appended, and ``/healthz``, ``/v1/status`` and ``/metrics`` say why.
    """
    metrics = metrics or ServiceMetrics()
    metrics.mismatch_found()
    conditions = [
        _condition("AnchorConsistent", False, error.reason, str(error)),
        _condition("Writable", False, error.reason, "the log is not opened for writing"),
    ]
    _log.error("refusing to serve the log", reason=error.reason, error=str(error))
    app = FastAPI(title="regsandbox audit log (refusing)", docs_url=None, redoc_url=None)
    detail = f"the audit log refuses to serve ({error.reason}): {error}"

    @app.get("/healthz")
    async def healthz() -> Response:
        """Not ready: the log is inconsistent with its anchor."""
        return _status_response(conditions)

    @app.get("/v1/status")
    async def status() -> Response:
        """The conditions, with the reason."""
        return _status_response(conditions)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        """Prometheus metrics."""
        return _metrics_response(metrics)

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def refuse(rest: str) -> Response:
        """Every other request: 503 with the reason."""
        return JSONResponse({"detail": detail, "reason": error.reason}, status_code=503)

    return app


_LOGGED_REQUEST_IDS = 32
"""Most request ids one append's log line names (a batch can hold thousands)."""


def _request_ids(events: Sequence[Event]) -> list[str]:
    """The distinct request ids of ``events``, in order, at most :data:`_LOGGED_REQUEST_IDS`."""
    seen: dict[str, None] = {}
    for event in events:
        if event.request_id and event.request_id not in seen:
            seen[event.request_id] = None
            if len(seen) == _LOGGED_REQUEST_IDS:
                break
    return list(seen)


def create_app(
    log: LogBackend,
    policy: AccessPolicy,
    *,
    metrics: ServiceMetrics | None = None,
    max_body_bytes: int = MAX_BODY_BYTES,
    witnessing: Witnessing | None = None,
    console: ConsoleSettings | None = None,
) -> FastAPI:
    """The FastAPI application serving ``log`` under ``policy``.

    ``max_body_bytes`` bounds an append body (default :data:`MAX_BODY_BYTES`);
    ``witnessing``, if given, provides ``/v1/checkpoint/cosigned`` and the ``Witnessed``
    condition (start and stop it yourself); ``console`` sets up the read-only web
    console at ``/console`` (:mod:`audit.console`), which reads as the API does.
    """
    app = FastAPI(title="regsandbox audit log", docs_url=None, redoc_url=None)
    metrics = metrics or ServiceMetrics()
    app.state.metrics = metrics
    app.state.conditions = []  # more informing conditions, e.g. the archive's (Archived)
    app.state.more_metrics = []  # more exposition text, e.g. the read server's
    if witnessing is not None:
        witnessing.attach_metrics(WitnessingMetrics(metrics.registry))
    if not isinstance(log, LogStatus) or log.anchored_checkpoint is None:
        # No anchor: export no anchor gauge rather than a 0 that would read as a mismatch.
        metrics.registry.unregister(metrics.anchor_consistent)
        metrics.registry.unregister(metrics.anchored_size)
    HttpMetrics(metrics.registry, "regsandbox_audit").install(app)
    log_metrics = LogMetrics(
        metrics.registry,
        size=lambda: log.size,
        checkpoint_size=lambda: Checkpoint.from_text(Note.parse(log.checkpoint_note).text).size,
        cosignatures=None
        if witnessing is None
        else lambda: {name: s.last_success for name, s in witnessing.status().items()},
    )

    history = CheckpointHistory()

    def current() -> tuple[bytes, Checkpoint]:
        note = log.checkpoint_note
        history.observe(note)
        return note, Checkpoint.from_text(Note.parse(note).text)

    async def gate(request: Request, scope: Scope, verb: Verb, cost: int = 1) -> Reader:
        if policy.reads_at is not None:
            return await _writer_read(policy, request, policy.reads_at)
        return await authorize_read(policy, request, scope, verb)

    @app.post("/v1/entries")
    async def append(request: Request) -> JSONResponse:
        """Append a batch; answer once it is durable."""
        identity = await _authorize_write(policy, request)
        body = await _read_body(request, max_body_bytes)
        events = _parse_events(body)
        started = time.perf_counter()
        try:
            indices = await run_in_threadpool(log.append_batch, events)
        except MalformedError as exc:
            _log.warning(
                "append refused",
                writer=identity,
                events=len(events),
                request_ids=_request_ids(events),
                error=str(exc),
            )
            raise HTTPException(422, str(exc)) from None
        except (AuditError, OSError) as exc:
            _log.error(
                "append failed",
                writer=identity,
                events=len(events),
                request_ids=_request_ids(events),
                error=str(exc),
            )
            metrics.appends_refused.inc()
            raise HTTPException(503, "the log could not make the batch durable") from None
        if len(indices) != len(events):
            _log.error("append returned a wrong count", writer=identity, events=len(events))
            raise HTTPException(503, "the log did not confirm every event")
        log_metrics.appended(len(events), time.perf_counter() - started, indices[-1] + 1)
        _log.info(
            "appended",
            writer=identity,
            events=len(events),
            first=indices[0],
            request_ids=_request_ids(events),
        )
        return JSONResponse({"indices": indices})

    add_read_routes(
        app,
        log,
        gate,
        current,
        cosigned=None if witnessing is None else witnessing.cosigned,
        publish=log.publish_checkpoint,
        history=history,
        console=None if policy.reads_at is not None else (console or ConsoleSettings()),
    )
    if policy.reads_at is not None:
        _console_elsewhere(app, policy.reads_at)

    def conditions() -> list[dict[str, str]]:
        found = _log_conditions(log, metrics)
        if witnessing is not None:
            found.append(_witness_condition(witnessing))
        found.extend(extra() for extra in app.state.conditions)
        return found

    @app.get("/healthz")
    async def healthz() -> Response:
        """200 while the log appends and signs; 503 with the failing condition otherwise."""
        found = _log_conditions(log, metrics)
        if all(c["status"] == "True" for c in found):
            return Response("ok\n", media_type="text/plain")
        return _status_response(found)

    @app.get("/v1/status")
    async def status() -> Response:
        """The service's conditions (no token needed; they hold no log content)."""
        return _status_response(conditions())

    @app.get("/metrics")
    async def metrics_route() -> Response:
        """Prometheus metrics, and those of any part serving beside (the read server)."""
        _log_conditions(log, metrics)
        more = [await run_in_threadpool(extra) for extra in app.state.more_metrics]
        body = generate_latest(metrics.registry) + b"".join(more)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def _console_elsewhere(app: FastAPI, reads_at: str) -> None:
    """``/console`` on an append listener whose reads are served elsewhere: say where."""

    @app.get("/console", include_in_schema=False)
    @app.get("/console/{rest:path}", include_in_schema=False)
    async def elsewhere(rest: str = "") -> Response:
        return PlainTextResponse(
            f"The audit console is served by the read server ({reads_at}).\n",
            status_code=404,
            headers={
                "Content-Security-Policy": "default-src 'none'",
                "Cache-Control": "no-store",
            },
        )


def add_read_routes(  # noqa: PLR0913 - what differs between the two listeners
    app: FastAPI,
    log: ReadBackend,
    gate: ReadGate,
    current: Callable[[], tuple[bytes, Checkpoint]],
    *,
    cosigned: Callable[[], bytes | None] | None = None,
    publish: Callable[[], bytes] | None = None,
    history: CheckpointHistory | None = None,
    console: ConsoleSettings | None = None,
    spent: Callable[[str, int], None] | None = None,
) -> None:
    """Add every read route to ``app``: entries, proofs, receipts, the tenant routes,
    tlog-tiles, the checkpoints and (with ``console``) the web console.

    The append listener (:func:`create_app`) and the read server
    (:func:`audit.read_server.create_read_app`) both serve reads through this, each with
    its own ``gate`` (who may read, and how fast) and ``current`` (the checkpoint: the
    writer's own, or the one it last published). ``cosigned`` gives the latest
    witness-cosigned checkpoint, if any; ``publish``, where the writer serves, signs a
    checkpoint now for a receipt of an entry that is durable but not yet covered;
    ``spent`` is told the entries each console listing page read (reader, count).
    """
    history = history or CheckpointHistory()

    @app.exception_handler(IndexError)
    async def out_of_range(request: Request, exc: IndexError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(AuditError)
    async def unreadable(request: Request, exc: AuditError) -> JSONResponse:
        _log.error("read failed", path=request.url.path, error=str(exc))
        return JSONResponse({"detail": "the log cannot be read right now"}, status_code=503)

    async def read_state(
        request: Request, scope: Scope = _WHOLE_LOG, verb: Verb = "get", cost: int = 1
    ) -> tuple[bytes, Checkpoint]:
        await gate(request, scope, verb, cost)
        return await run_in_threadpool(current)

    @app.get("/v1/checkpoint")
    async def checkpoint(request: Request) -> Response:
        """The latest signed checkpoint."""
        note, _ = await read_state(request)
        return Response(
            note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    @app.get("/v1/checkpoint/cosigned")
    async def cosigned_checkpoint(request: Request) -> Response:
        """The latest checkpoint carrying witness cosignatures (may trail the latest)."""
        await gate(request, _WHOLE_LOG, "get")
        note = None if cosigned is None else await run_in_threadpool(cosigned)
        if note is None:
            raise HTTPException(404, "no checkpoint has been cosigned by a witness yet")
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
        cost = min(max(1, end - start), MAX_RANGE)
        _, cp = await read_state(request, verb="list", cost=cost)
        if not 0 <= start < end <= cp.size:
            raise HTTPException(404, f"range [{start}, {end}) is not in a log of {cp.size}")
        if end - start > MAX_RANGE:
            raise HTTPException(400, f"at most {MAX_RANGE} entries per request")

        def read() -> bytes:
            return b"".join(data + b"\n" for data in log.entry_range(start, end))

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

        Where the writer serves, an entry that is durable but not yet in a checkpoint
        gets one signed now, so a writer can ask for a receipt right after its append.
        """
        note, cp = await read_state(request)
        if publish is not None and 0 <= index < log.size and index >= cp.size:
            note = await run_in_threadpool(publish)
            cp = Checkpoint.from_text(Note.parse(note).text)
        if not 0 <= index < cp.size:
            raise HTTPException(404, f"no entry {index} in the log of {cp.size}")
        proof = await run_in_threadpool(log.inclusion_proof, index, cp.size)
        body = TlogProof(index, tuple(proof), note).to_bytes()
        return Response(body, media_type="text/plain; charset=utf-8")

    tenants = TenantIndex(log.entry_bytes)
    _tenant_routes(app, log, gate, current, tenants)
    _tile_routes(app, log, gate, current)
    if console is not None:
        mount_console(app, ConsoleSource(log, current, tenants, history, spent), gate, console)


def _tenant_scope(tenant: str) -> Scope:
    try:
        return Scope(check_tenant_name(tenant))
    except MalformedError as exc:
        raise HTTPException(400, str(exc)) from None


def _tenant_routes(
    app: FastAPI,
    log: ReadBackend,
    gate: ReadGate,
    current: Callable[[], tuple[bytes, Checkpoint]],
    index: TenantIndex,
) -> None:
    """``/v1/tenants/{tenant}/…``: one tenant's entries, each with its proof."""

    async def state(
        request: Request, tenant: str, verb: Verb, cost: int = 1
    ) -> tuple[bytes, Checkpoint]:
        await gate(request, _tenant_scope(tenant), verb, cost)
        return await run_in_threadpool(current)

    async def own(tenant: str, entry_index: int, cp: Checkpoint) -> None:
        """404 past the checkpoint, 403 for an entry that is not ``tenant``'s."""
        if not 0 <= entry_index < cp.size:
            raise HTTPException(404, f"no entry {entry_index} in the checkpointed log of {cp.size}")
        found = await run_in_threadpool(index.tenant_of, entry_index, cp.size)
        if found != tenant:
            raise _challenge(
                403, f"entry {entry_index} is not an entry of tenant {tenant}", "insufficient_scope"
            )

    def proven(entry_index: int, size: int) -> dict[str, Any]:
        data = log.entry_bytes(entry_index)
        proof = log.inclusion_proof(entry_index, size)
        return {
            "index": entry_index,
            "entry": base64.b64encode(data).decode(),
            "inclusion": _hashes(proof),
        }

    @app.get("/v1/tenants/{tenant}/checkpoint")
    async def tenant_checkpoint(request: Request, tenant: str) -> Response:
        """The latest signed checkpoint (the same note every reader gets)."""
        note, _ = await state(request, tenant, "get")
        return Response(
            note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    @app.get("/v1/tenants/{tenant}/entries")
    async def tenant_entries(
        request: Request, tenant: str, start: int = 0, limit: int = 100
    ) -> JSONResponse:
        """The tenant's entries from index ``start`` on, each with its inclusion proof."""
        note, cp = await state(request, tenant, "list", min(max(1, limit), MAX_RANGE))
        if start < 0 or not 0 < limit <= MAX_RANGE:
            raise HTTPException(400, f"want start >= 0 and 0 < limit <= {MAX_RANGE}")

        def page() -> dict[str, Any]:
            chosen, after = index.page(tenant, start, limit, cp.size)
            return {
                "tenant": tenant,
                "size": cp.size,
                "checkpoint": note.decode(),
                "entries": [proven(i, cp.size) for i in chosen],
                "next": after,
            }

        return JSONResponse(await run_in_threadpool(page))

    @app.get("/v1/tenants/{tenant}/entries/{entry_index}")
    async def tenant_entry(request: Request, tenant: str, entry_index: int) -> JSONResponse:
        """One of the tenant's entries with its inclusion proof; 403 for another's."""
        note, cp = await state(request, tenant, "get")
        await own(tenant, entry_index, cp)
        body = await run_in_threadpool(proven, entry_index, cp.size)
        return JSONResponse({**body, "size": cp.size, "checkpoint": note.decode()})

    @app.get("/v1/tenants/{tenant}/proof/inclusion")
    async def tenant_inclusion(
        request: Request, tenant: str, index: int, size: int | None = None
    ) -> JSONResponse:
        """Inclusion proof of one of the tenant's entries; 403 for another's."""
        _, cp = await state(request, tenant, "get")
        tree = cp.size if size is None else size
        await own(tenant, index, cp)
        if not index < tree <= cp.size:
            raise HTTPException(404, f"no index {index} in a tree of {tree} (log: {cp.size})")
        proof = await run_in_threadpool(log.inclusion_proof, index, tree)
        return JSONResponse({"index": index, "size": tree, "hashes": _hashes(proof)})

    @app.get("/v1/tenants/{tenant}/proof/consistency")
    async def tenant_consistency(
        request: Request, tenant: str, old: int, new: int | None = None
    ) -> JSONResponse:
        """Consistency proof between two tree sizes (hashes only, no entry)."""
        _, cp = await state(request, tenant, "get")
        tree = cp.size if new is None else new
        if not 0 < old <= tree <= cp.size:
            raise HTTPException(404, f"no proof from {old} to {tree} (log: {cp.size})")
        proof = await run_in_threadpool(log.consistency_proof, old, tree)
        return JSONResponse({"old": old, "new": tree, "hashes": _hashes(proof)})

    @app.get("/v1/tenants/{tenant}/receipt/{entry_index}")
    async def tenant_receipt(request: Request, tenant: str, entry_index: int) -> Response:
        """A C2SP tlog-proof of one of the tenant's entries; 403 for another's."""
        note, cp = await state(request, tenant, "get")
        await own(tenant, entry_index, cp)
        proof = await run_in_threadpool(log.inclusion_proof, entry_index, cp.size)
        body = TlogProof(entry_index, tuple(proof), note).to_bytes()
        return Response(body, media_type="text/plain; charset=utf-8")


_TILE_CACHE = "private, max-age=31536000, immutable"
"""A tile, full or partial of a given width, never changes once the checkpoint covers it."""


def _tile_routes(
    app: FastAPI,
    log: ReadBackend,
    gate: ReadGate,
    current: Callable[[], tuple[bytes, Checkpoint]],
) -> None:
    """``/tlog/``: the whole log as C2SP tlog-tiles, for whole-log readers."""

    @app.get("/tlog/checkpoint")
    async def tiles_checkpoint(request: Request) -> Response:
        """The latest signed checkpoint, as tlog-tiles clients expect it."""
        await gate(request, _WHOLE_LOG, "list")
        note, _ = await run_in_threadpool(current)
        return Response(
            note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-store"}
        )

    @app.get("/tlog/tile/{rest:path}")
    async def tile(request: Request, rest: str) -> Response:
        """A hash tile or an entry bundle, if the checkpoint covers it."""
        try:
            wanted = parse_tile_path(f"tile/{rest}")
        except MalformedError as exc:
            await gate(request, _WHOLE_LOG, "list")
            raise HTTPException(404, str(exc)) from None
        await gate(request, _WHOLE_LOG, "list", 1 if wanted.level is not None else wanted.width)
        _, cp = await run_in_threadpool(current)
        if wanted.width > tile_width(wanted.level, wanted.index, cp.size):
            raise HTTPException(404, f"{wanted.path} is not in the checkpointed log of {cp.size}")
        if wanted.level is None:
            data = await run_in_threadpool(entry_bundle, log.entry_bytes, wanted)
        elif isinstance(log, TileSource):
            data = await run_in_threadpool(hash_tile, log, wanted)
        else:
            raise HTTPException(404, "this log does not serve hash tiles")
        return Response(
            data, media_type="application/octet-stream", headers={"Cache-Control": _TILE_CACHE}
        )
