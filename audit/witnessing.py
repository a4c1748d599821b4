"""Getting checkpoints witnessed: the log's side of c2sp.org/tlog-witness.

The audit service submits every new checkpoint to each configured witness with
``add-checkpoint`` (old size and a consistency proof from the size the witness last
cosigned), in a background thread, so appends never wait for a witness. A witness
refuses a checkpoint that does not extend what it cosigned before: a log rolled back or
forked is then caught by someone outside the platform even if no client kept a
checkpoint. Answers handled as the specification says:

- 200: cosignature lines; those by unknown keys are ignored ("the client MUST ignore any
  cosignatures from unknown keys"), the witness's own is verified and kept;
- 409 with a ``text/x.tlog.size`` body: the witness is at another size; the request is
  made again from that size (with a proof from it) — unless the witness is *ahead* of
  the log, which means the log lost entries it had published (a rollback);
- 422: the witness refuses the proof or sees a fork.

Cosignatures gathered for one checkpoint are merged into one note, kept in the log
directory as ``checkpoint.cosigned`` and served at ``GET /v1/checkpoint/cosigned``
("some logs can facilitate [monitoring] by fetching a larger set of cosignatures (e.g.
in the background) and serving those to monitors", tlog-witness). ``GET
/v1/checkpoint`` stays the latest checkpoint the log signed, without waiting for any
witness, so receipts are never held up by a slow or absent witness.
:func:`verify_cosigned` is the offline check: a log signature and a quorum of named
witnesses.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import httpx
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.durable import replace_file
from audit.errors import AuditError, MalformedError, VerificationError
from audit.note import Note, NoteSignature, Verifier, b64encode
from audit.witness import SIZE_CONTENT_TYPE, CosignatureVerifier

__all__ = [
    "COSIGNED_FILE",
    "WitnessEndpoint",
    "WitnessStatus",
    "Witnessing",
    "WitnessingMetrics",
    "fetch_witnessed",
    "verify_cosigned",
]

COSIGNED_FILE = "checkpoint.cosigned"
"""File in the log directory holding the latest checkpoint with witness cosignatures."""

_log = structlog.get_logger("audit.witnessing")


class CheckpointSource(Protocol):
    """What witnessing needs from the log (:class:`audit.log.AuditLog` provides it)."""

    @property
    def checkpoint_note(self) -> bytes:
        """The latest signed checkpoint note."""
        ...

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof from ``old_size`` to ``new_size``."""
        ...


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness: its submission prefix (``http(s)://host[:port][/path]``) and its key."""

    url: str
    """Submission prefix; requests go to ``<url>/add-checkpoint``."""
    verifier: CosignatureVerifier
    """The witness's cosignature key."""

    @property
    def name(self) -> str:
        """The witness's name (its key name)."""
        return self.verifier.name


@dataclass
class WitnessStatus:
    """What the service knows about one witness."""

    cosigned_size: int | None = None
    """Size of the latest checkpoint this witness cosigned for us (``None``: not yet)."""
    witness_size: int | None = None
    """The witness's own latest size, as it told us (200 or 409)."""
    refused: str | None = None
    """Why the witness refused the log's latest checkpoint (a fork or rollback), if it did."""
    error: str | None = None
    """The last transport or protocol error, if the last attempt failed."""
    last_success: float | None = None
    """POSIX time of the last cosignature received."""


@dataclass
class WitnessingMetrics:
    """Prometheus metrics of witnessing (registered in the service's registry)."""

    registry: CollectorRegistry
    """Where the metrics are registered."""
    cosigned_size: Gauge = field(init=False)
    """Latest size each witness cosigned."""
    lag: Gauge = field(init=False)
    """Entries the log is ahead of each witness's cosignature."""
    failures: Counter = field(init=False)
    """Failed submissions by witness and reason."""

    def __post_init__(self) -> None:
        self.cosigned_size = Gauge(
            "regsandbox_audit_witness_cosigned_tree_size",
            "Tree size of the latest checkpoint each witness cosigned.",
            ["witness"],
            registry=self.registry,
        )
        self.lag = Gauge(
            "regsandbox_audit_witness_lag_entries",
            "Entries in the log's latest checkpoint not yet covered by each witness's cosignature.",
            ["witness"],
            registry=self.registry,
        )
        self.failures = Counter(
            "regsandbox_audit_witness_failures",
            "Checkpoint submissions that did not get a cosignature, by witness and reason "
            "(refused: the witness saw a fork or rollback; ahead: the witness cosigned a "
            "larger tree than the log has; unreachable; protocol).",
            ["witness", "reason"],
            registry=self.registry,
        )


class _RefusedError(Exception):
    def __init__(self, reason: str, message: str, witness_size: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.witness_size = witness_size


def _request_body(old: int, proof: Sequence[bytes], note: bytes) -> bytes:
    head = f"old {old}\n" + "".join(b64encode(h) + "\n" for h in proof)
    return head.encode() + b"\n" + note


def _own_cosignature(endpoint: WitnessEndpoint, checkpoint_text: str, body: bytes) -> NoteSignature:
    """The witness's cosignature among the answer's lines; other keys' lines are ignored."""
    try:
        lines = Note.parse(checkpoint_text.encode() + b"\n" + body).signatures
    except MalformedError as exc:
        raise _RefusedError("protocol", f"the answer is not note signature lines: {exc}") from None
    verifier = endpoint.verifier
    for sig in lines:
        if sig.name == verifier.name and sig.key_id == verifier.key_id:
            try:
                timestamp = verifier.verify(checkpoint_text, sig)
            except VerificationError as exc:
                raise _RefusedError("protocol", str(exc)) from None
            if timestamp == 0:
                raise _RefusedError("protocol", "the cosignature has no timestamp")
            return sig
    raise _RefusedError("protocol", f"the answer carries no cosignature by {verifier.name}")


class Witnessing:
    """Submits each new checkpoint of ``log`` to ``witnesses`` from a background thread.

    Call :meth:`start` once and :meth:`stop` at shutdown; :meth:`run_once` does one round
    synchronously (tests, tools). Cosigned checkpoints are written to ``store`` (the
    log directory's :data:`COSIGNED_FILE`) when they carry at least ``publish_quorum``
    cosignatures or at least as many as the one stored.
    """

    def __init__(
        self,
        log: CheckpointSource,
        witnesses: Sequence[WitnessEndpoint],
        store: Path,
        *,
        metrics: WitnessingMetrics | None = None,
        publish_quorum: int | None = None,
        interval: float = 1.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not witnesses:
            raise ValueError("witnessing needs at least one witness")
        names = [w.name for w in witnesses]
        if len(set(names)) != len(names):
            raise ValueError("each witness must be named once")
        self._log = log
        self.witnesses = tuple(witnesses)
        """The witnesses, in the order given."""
        self.store = store
        """Where the cosigned checkpoint is kept."""
        self._metrics = metrics
        self.publish_quorum = len(witnesses) if publish_quorum is None else publish_quorum
        """Cosignatures a checkpoint needs to replace a stored one with more."""
        self._interval = interval
        self._clock = clock
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)
        self._status = {w.name: WitnessStatus() for w in witnesses}
        self._mu = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._submitted: bytes | None = None

    # -- state ------------------------------------------------------------------------

    def status(self) -> dict[str, WitnessStatus]:
        """A copy of each witness's status, by name."""
        with self._mu:
            return {name: WitnessStatus(**vars(s)) for name, s in self._status.items()}

    def attach_metrics(self, metrics: WitnessingMetrics) -> None:
        """Report to ``metrics`` from now on (the service attaches its registry's)."""
        self._metrics = metrics

    def cosigned(self) -> bytes | None:
        """The latest stored cosigned checkpoint note, or ``None`` if there is none yet."""
        try:
            return self.store.read_bytes()
        except FileNotFoundError:
            return None

    # -- the background loop -----------------------------------------------------------

    def start(self) -> None:
        """Start submitting in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="audit-witnessing", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the HTTP client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            note = self._log.checkpoint_note
            # A new checkpoint goes to every witness; after a transport or protocol error
            # the same one is tried again each interval. A refusal (fork, rollback) is
            # not repeated until the log signs another checkpoint.
            with self._mu:
                failing = any(st.error is not None for st in self._status.values())
            pending = note != self._submitted or failing
            if pending:
                try:
                    self.run_once()
                except Exception as exc:  # the loop must survive anything
                    _log.error("witnessing round failed", error=str(exc))
            self._report_lag()
            self._stop.wait(self._interval)

    def _report_lag(self) -> None:
        """Lag of each witness behind the log's latest checkpoint, in entries."""
        if self._metrics is None:
            return
        with contextlib.suppress(MalformedError):
            size = Checkpoint.from_text(Note.parse(self._log.checkpoint_note).text).size
            for name, status in self.status().items():
                self._metrics.lag.labels(name).set(max(0, size - (status.cosigned_size or 0)))

    def run_once(self) -> bytes | None:
        """Submit the log's latest checkpoint to every witness; return the merged note.

        Returns the checkpoint with the log's signatures and every cosignature received
        in this round, or ``None`` if no witness cosigned it.
        """
        note = self._log.checkpoint_note
        parsed = Note.parse(note)
        checkpoint = Checkpoint.from_text(parsed.text)
        cosignatures: list[NoteSignature] = []
        for endpoint in self.witnesses:
            sig = self._submit(endpoint, note, parsed.text, checkpoint)
            if sig is not None:
                cosignatures.append(sig)
        self._submitted = note
        if not cosignatures:
            return None
        merged = Note(parsed.text, (*parsed.signatures, *cosignatures)).to_bytes()
        self._keep(merged, checkpoint.size, len(cosignatures))
        return merged

    # -- one witness ------------------------------------------------------------------

    def _submit(
        self, endpoint: WitnessEndpoint, note: bytes, text: str, checkpoint: Checkpoint
    ) -> NoteSignature | None:
        with self._mu:
            status = self._status[endpoint.name]
            old = status.witness_size if status.witness_size is not None else 0
        try:
            sig: NoteSignature | None = None
            for _ in range(3):  # a 409 tells the witness's size: resubmit from it, twice
                try:
                    sig = self._post(endpoint, note, text, checkpoint, old)
                    break
                except _RefusedError as conflict:
                    if conflict.reason != "conflict" or conflict.witness_size is None:
                        raise
                    old = conflict.witness_size
                    if old > checkpoint.size:
                        raise _RefusedError(
                            "ahead",
                            f"the witness cosigned a tree of {old} entries but the log's "
                            f"latest checkpoint has {checkpoint.size}: the log was rolled "
                            "back or lost entries",
                            old,
                        ) from None
            if sig is None:
                raise _RefusedError("protocol", "the witness keeps answering 409")
        except _RefusedError as refusal:
            self._failed(endpoint, refusal, checkpoint)
            return None
        except httpx.HTTPError as exc:
            self._failed(
                endpoint, _RefusedError("unreachable", f"{type(exc).__name__}: {exc}"), checkpoint
            )
            return None
        with self._mu:
            status.cosigned_size = status.witness_size = checkpoint.size
            status.refused = status.error = None
            status.last_success = self._clock()
        if self._metrics is not None:
            self._metrics.cosigned_size.labels(endpoint.name).set(checkpoint.size)
            self._metrics.lag.labels(endpoint.name).set(0)
        return sig

    def _post(
        self, endpoint: WitnessEndpoint, note: bytes, text: str, checkpoint: Checkpoint, old: int
    ) -> NoteSignature:
        if 0 < old < checkpoint.size:
            proof = self._log.consistency_proof(old, checkpoint.size)
        else:
            proof = []
        response = self._http.post(
            endpoint.url.rstrip("/") + "/add-checkpoint",
            content=_request_body(old, proof, note),
        )
        if response.status_code == 200:
            return _own_cosignature(endpoint, text, response.content)
        detail = response.text.strip()[:300]
        if response.status_code == 409:
            ctype = response.headers.get("content-type", "").split(";")[0].strip()
            size_text = response.text
            if ctype != SIZE_CONTENT_TYPE or not size_text.endswith("\n"):
                raise _RefusedError("protocol", f"a 409 without a {SIZE_CONTENT_TYPE} body")
            value = size_text[:-1]
            if not value.isascii() or not value.isdigit():
                raise _RefusedError("protocol", f"a 409 with a bad size {value[:30]!r}")
            raise _RefusedError("conflict", f"the witness is at size {value}", int(value))
        if response.status_code == 422:
            raise _RefusedError(
                "refused",
                f"the witness refuses checkpoint {checkpoint.size} as inconsistent with what "
                f"it cosigned before (a fork or a rollback): {detail}",
            )
        raise _RefusedError("protocol", f"HTTP {response.status_code}: {detail}")

    def _failed(
        self, endpoint: WitnessEndpoint, refusal: _RefusedError, checkpoint: Checkpoint
    ) -> None:
        with self._mu:
            status = self._status[endpoint.name]
            if refusal.witness_size is not None:
                status.witness_size = refusal.witness_size
            if refusal.reason in ("refused", "ahead"):
                status.refused = str(refusal)
                status.error = None
            else:
                status.error = str(refusal)
            lag = checkpoint.size - (status.cosigned_size or 0)
        log = _log.error if refusal.reason in ("refused", "ahead") else _log.warning
        log(
            "witness did not cosign",
            witness=endpoint.name,
            reason=refusal.reason,
            error=str(refusal),
        )
        if self._metrics is not None:
            self._metrics.failures.labels(endpoint.name, refusal.reason).inc()
            self._metrics.lag.labels(endpoint.name).set(max(0, lag))

    # -- storing ------------------------------------------------------------------------

    def _keep(self, merged: bytes, size: int, count: int) -> None:
        stored = self.cosigned()
        if stored is not None:
            with contextlib.suppress(MalformedError):
                old = Note.parse(stored)
                old_size = Checkpoint.from_text(old.text).size
                old_count = sum(
                    1
                    for sig in old.signatures
                    if any(
                        sig.name == w.name and sig.key_id == w.verifier.key_id
                        for w in self.witnesses
                    )
                )
                if size < old_size or (count < self.publish_quorum and count < old_count):
                    return
        replace_file(self.store, merged)


def fetch_witnessed(
    witnesses: Sequence[WitnessEndpoint], origin: str, *, timeout: float = 10.0
) -> list[tuple[str, bytes]]:
    """The latest checkpoint each witness cosigned for ``origin``, as ``(where, note)``.

    Read from each witness's monitoring endpoint (``GET <url>/<origin hash>/checkpoint``,
    the monitoring prefix taken to be the submission prefix). Before it signs anything
    the log checks that it extends each of them (``AuditLog(extends=...)``): a witness is
    then a second anchor that no one on the platform can rewrite. A witness that never
    cosigned (404) or cannot be reached is skipped with a warning.
    """
    origin_hash = hashlib.sha256(origin.encode()).hexdigest()
    found: list[tuple[str, bytes]] = []
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for endpoint in witnesses:
            url = f"{endpoint.url.rstrip('/')}/{origin_hash}/checkpoint"
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                _log.warning("witness unreachable", witness=endpoint.name, error=str(exc))
                continue
            if response.status_code == 404:
                continue
            if response.status_code != 200:
                _log.warning(
                    "witness checkpoint unavailable",
                    witness=endpoint.name,
                    status=response.status_code,
                )
                continue
            found.append((f"witness {endpoint.name}", response.content))
    return found


def verify_cosigned(
    note: bytes,
    log_keys: Sequence[Verifier],
    witness_keys: Sequence[CosignatureVerifier],
    quorum: int,
    *,
    origin: str | None = None,
) -> tuple[Checkpoint, tuple[str, ...]]:
    """Check a cosigned checkpoint: signed by the log and by ``quorum`` of the named witnesses.

    Cosignatures by keys not in ``witness_keys`` are ignored; each named witness counts
    once. Returns the checkpoint and the names of the witnesses whose cosignatures
    verified; raises :class:`~audit.errors.VerificationError` if fewer than ``quorum`` did.
    """
    if quorum < 1:
        raise MalformedError("a witness quorum is at least 1")
    if quorum > len(witness_keys):
        raise MalformedError(
            f"a quorum of {quorum} needs at least {quorum} witness keys, {len(witness_keys)} given"
        )
    checkpoint = open_checkpoint(note, log_keys, origin=origin)
    good: list[str] = []
    problems: list[str] = []
    for key in witness_keys:
        try:
            key.verify_note(note)
        except (VerificationError, AuditError) as exc:
            problems.append(str(exc))
            continue
        if key.name not in good:
            good.append(key.name)
    if len(good) < quorum:
        raise VerificationError(
            f"checkpoint {checkpoint.size} carries valid cosignatures from {len(good)} of the "
            f"named witnesses ({', '.join(good) or 'none'}), fewer than the quorum of {quorum}"
            + (f"; {'; '.join(problems)}" if problems else "")
        )
    return checkpoint, tuple(good)
