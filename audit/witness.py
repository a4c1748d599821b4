"""A C2SP transparency-log witness (c2sp.org/tlog-witness, c2sp.org/tlog-cosignature).

An outside auditor runs a witness to make sure the log never forks or shrinks: for each
log it trusts, the witness keeps the latest checkpoint it cosigned and cosigns a new one
only if a consistency proof shows it extends that one.

The module has three layers, each usable on its own:

- pure functions and types, no I/O: :class:`Cosigner` / :class:`CosignatureVerifier`
  (Ed25519 ``cosignature/v1``, key type ``0x04``), :func:`parse_add_checkpoint` and
  :func:`check_add_checkpoint`, which decide an ``add-checkpoint`` request and raise a
  :class:`WitnessRefusedError` carrying the HTTP status the specification prescribes;
- :class:`FileWitnessState`, durable per-origin state (one file per log, replaced
  atomically) and :class:`Witness`, which checks and persists under one lock;
- :func:`witness_app`, a Starlette application serving ``POST /add-checkpoint`` and
  the monitoring endpoint ``GET /<origin hash>/checkpoint``.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from audit.checkpoint import Checkpoint
from audit.durable import replace_file
from audit.errors import AuditError, MalformedError, StorageError, VerificationError
from audit.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from audit.note import (
    Note,
    NoteSignature,
    PrivateKey,
    Verifier,
    b64decode,
    b64encode,
    check_key_name,
    open_note,
    parse_key_fields,
)

__all__ = [
    "COSIGNATURE_V1",
    "MAX_BODY_BYTES",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpointRequest",
    "CosignatureVerifier",
    "Cosigner",
    "FileWitnessState",
    "Witness",
    "WitnessRefusedError",
    "WitnessState",
    "check_add_checkpoint",
    "parse_add_checkpoint",
    "witness_app",
]

COSIGNATURE_V1 = 0x04
"""Signature type byte of Ed25519 ``cosignature/v1`` keys (key IDs and vkeys)."""

MAX_PROOF_LINES = 63
"""Most consistency-proof lines a request may carry."""

MAX_BODY_BYTES = 64 * 1024
"""Largest ``add-checkpoint`` body accepted (a checkpoint plus 63 hashes is far smaller)."""

SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""Content type of a 409 response, whose body is the witness's tree size."""

_log = structlog.get_logger("audit.witness")
_HEADER = "cosignature/v1\n"
_MAX_TIMESTAMP = 2**63 - 1


def _cosigner_key_id(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([COSIGNATURE_V1]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _signed_message(checkpoint_text: str, timestamp: int) -> bytes:
    return f"{_HEADER}time {timestamp}\n{checkpoint_text}".encode()


_COSIGNER_KIND = "an Ed25519 cosignature/v1 key (type 0x04)"


def _parse_key(text: str, what: str) -> tuple[str, int, bytes]:
    return parse_key_fields(text, what, COSIGNATURE_V1, _COSIGNER_KIND)


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's public key: checks its Ed25519 ``cosignature/v1`` signatures."""

    name: str
    """The witness's name, a schema-less URL such as ``witness.example.org/w1``."""
    public_key: bytes
    """32-byte Ed25519 public key."""

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if len(self.public_key) != 32:
            raise MalformedError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> int:
        """Key ID: ``SHA-256(name || 0x0A || 0x04 || key)[:4]``."""
        return _cosigner_key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        """The verifier key string ``name+keyid+base64(0x04 || key)``."""
        blob = b64encode(bytes([COSIGNATURE_V1]) + self.public_key)
        return f"{self.name}+{self.key_id:08x}+{blob}"

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Parse a cosigner vkey; the key ID must match name and key."""
        name, kid, public = _parse_key(vkey.strip(), "cosigner verifier key")
        verifier = cls(name, public)
        if verifier.key_id != kid:
            raise MalformedError(f"cosigner key {name}: key ID {kid:08x} does not match the key")
        return verifier

    def verify(self, checkpoint_text: str, signature: NoteSignature) -> int:
        """Check one cosignature on ``checkpoint_text``; return its timestamp.

        Raises :class:`~audit.errors.VerificationError` if the line is not this witness's
        or does not verify.
        """
        if signature.name != self.name or signature.key_id != self.key_id:
            raise VerificationError(f"signature is not by cosigner {self.name}")
        if len(signature.signature) != 8 + 64:
            raise VerificationError("a cosignature/v1 signature is 72 bytes")
        timestamp = int.from_bytes(signature.signature[:8], "big")
        if timestamp > _MAX_TIMESTAMP:
            raise VerificationError("cosignature timestamp is out of range")
        message = _signed_message(checkpoint_text, timestamp)
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                signature.signature[8:], message
            )
        except InvalidSignature:
            raise VerificationError(f"bad cosignature by {self.name}") from None
        return timestamp

    def verify_note(self, note: bytes) -> int:
        """Find and check this witness's cosignature on a signed checkpoint note.

        Returns the cosignature's timestamp; raises
        :class:`~audit.errors.VerificationError` if there is none or it is bad.
        """
        parsed = Note.parse(note)
        for sig in parsed.signatures:
            if sig.name == self.name and sig.key_id == self.key_id:
                return self.verify(parsed.text, sig)
        raise VerificationError(f"checkpoint carries no cosignature by {self.name}")


class Cosigner(PrivateKey):
    """A witness's Ed25519 private key: makes ``cosignature/v1`` signature lines."""

    key_type = COSIGNATURE_V1
    what = "witness key"
    kind = _COSIGNER_KIND
    verifier: CosignatureVerifier

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        super().__init__(name, private_key)
        self.verifier = CosignatureVerifier(name, self._public_bytes())
        """The matching public key."""

    def cosign(self, checkpoint: Checkpoint, timestamp: int) -> NoteSignature:
        """Cosign ``checkpoint`` as of ``timestamp`` (POSIX seconds)."""
        if not 0 <= timestamp <= _MAX_TIMESTAMP:
            raise ValueError(f"timestamp {timestamp} is out of range")
        signature = self._key.sign(_signed_message(checkpoint.text(), timestamp))
        return NoteSignature(
            self.name, self.verifier.key_id, timestamp.to_bytes(8, "big") + signature
        )


class WitnessRefusedError(AuditError):
    """The witness refuses an ``add-checkpoint`` request; ``status`` is the HTTP code.

    ``body`` and ``content_type`` are the response to send (for 409 the witness's current
    tree size, as the specification requires).
    """

    def __init__(
        self, status: int, message: str, *, body: str | None = None, content_type: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else message + "\n"
        self.content_type = content_type or "text/plain; charset=utf-8"

    @classmethod
    def conflict(cls, message: str, current_size: int) -> WitnessRefusedError:
        """A 409 Conflict whose body is ``current_size`` in decimal and a newline."""
        return cls(409, message, body=f"{current_size}\n", content_type=SIZE_CONTENT_TYPE)


@dataclass(frozen=True)
class AddCheckpointRequest:
    """A parsed ``add-checkpoint`` body (the checkpoint is not yet verified)."""

    old_size: int
    """Size of the checkpoint the client believes the witness last cosigned."""
    proof: tuple[bytes, ...]
    """Consistency proof from ``old_size`` to the checkpoint's size."""
    checkpoint: bytes
    """The signed checkpoint note, verbatim."""


def _decimal(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or text != str(int(text)):
        raise WitnessRefusedError(400, f"{what} {text!r} is not a decimal without leading zeroes")
    value = int(text)
    if value >= 2**63:
        raise WitnessRefusedError(400, f"{what} is too large")
    return value


def parse_add_checkpoint(body: bytes) -> AddCheckpointRequest:
    """Parse an ``add-checkpoint`` body; raise a 400 :class:`WitnessRefusedError` if malformed."""
    if len(body) > MAX_BODY_BYTES:
        raise WitnessRefusedError(400, f"request body is over {MAX_BODY_BYTES} bytes")
    split = body.find(b"\n\n")
    if split < 0:
        raise WitnessRefusedError(400, "request has no empty line before the checkpoint")
    try:
        head = body[:split].decode("ascii")
    except UnicodeDecodeError:
        raise WitnessRefusedError(400, "request header lines are not ASCII") from None
    lines = head.split("\n")
    if not lines[0].startswith("old "):
        raise WitnessRefusedError(400, "request does not start with an 'old <size>' line")
    old_size = _decimal(lines[0][4:], "old size")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefusedError(400, f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof: list[bytes] = []
    for line in lines[1:]:
        try:
            digest = b64decode(line, "consistency proof hash")
        except MalformedError as exc:
            raise WitnessRefusedError(400, str(exc)) from None
        if len(digest) != HASH_SIZE:
            raise WitnessRefusedError(400, f"consistency proof hashes must be {HASH_SIZE} bytes")
        proof.append(digest)
    return AddCheckpointRequest(old_size, tuple(proof), body[split + 2 :])


def _parse_checkpoint_note(data: bytes) -> tuple[Note, Checkpoint]:
    try:
        note = Note.parse(data)
        return note, Checkpoint.from_text(note.text)
    except MalformedError as exc:
        raise WitnessRefusedError(400, f"malformed checkpoint: {exc}") from None


def check_add_checkpoint(
    request: AddCheckpointRequest,
    logs: Mapping[str, Sequence[Verifier]],
    latest: Checkpoint | None,
) -> Checkpoint:
    """Decide an ``add-checkpoint`` request; pure, no I/O.

    ``logs`` maps each trusted origin to its keys; ``latest`` is the checkpoint this
    witness last cosigned for the request's origin (``None`` if never). Returns the new
    checkpoint to record and cosign, or raises :class:`WitnessRefusedError` with the status
    c2sp.org/tlog-witness prescribes, checked in the order it states them: 400 malformed
    or old size above the checkpoint's, 404 unknown origin, 403 no valid trusted
    signature, 409 old size is not the witness's size (body: the witness's size), 422 a
    size-zero checkpoint whose root is not the empty tree's, a non-empty proof from size
    zero, a consistency proof that does not verify, or an equal-size checkpoint with
    another root (a fork).
    """
    _, parsed = _parse_checkpoint_note(request.checkpoint)
    verifiers = logs.get(parsed.origin)
    if verifiers is None:
        raise WitnessRefusedError(404, f"unknown log origin {parsed.origin!r}")
    try:
        open_note(request.checkpoint, verifiers)
    except (VerificationError, MalformedError) as exc:
        raise WitnessRefusedError(403, f"checkpoint signature does not verify: {exc}") from None
    if latest is not None and latest.origin != parsed.origin:
        raise ValueError("latest checkpoint is for another origin")
    if request.old_size > parsed.size:
        raise WitnessRefusedError(
            400, f"old size {request.old_size} is larger than checkpoint size {parsed.size}"
        )
    current = latest.size if latest is not None else 0
    if request.old_size != current:
        raise WitnessRefusedError.conflict(
            f"old size {request.old_size} is not the witness's size {current}", current
        )
    if parsed.size == 0 and parsed.root != EMPTY_ROOT:
        raise WitnessRefusedError(
            422, "a checkpoint of size 0 must have the root hash of the empty tree"
        )
    if latest is None or latest.size == 0:
        if request.proof:
            raise WitnessRefusedError(
                422, "the consistency proof must be empty when the old size is 0"
            )
        return parsed
    if parsed.size == latest.size:
        if parsed.root != latest.root:
            raise WitnessRefusedError(
                422, f"fork: a different root for size {parsed.size} than the one cosigned"
            )
        if request.proof:
            raise WitnessRefusedError(422, "sizes are equal but the consistency proof is not empty")
        return parsed
    try:
        verify_consistency(latest.size, parsed.size, request.proof, latest.root, parsed.root)
    except VerificationError as exc:
        raise WitnessRefusedError(422, f"consistency proof does not verify: {exc}") from None
    return parsed


class WitnessState:
    """Where a witness keeps the latest cosigned checkpoint of each log (an interface)."""

    def load(self, origin: str) -> bytes | None:
        """The signed checkpoint last stored for ``origin``, or ``None``."""
        raise NotImplementedError

    def store(self, origin: str, checkpoint: bytes) -> None:
        """Durably record ``checkpoint`` for ``origin``; return only once it is on disk."""
        raise NotImplementedError


class FileWitnessState(WitnessState):
    """Per-origin state files in a directory, each replaced atomically and fsynced.

    The file for an origin is named by the SHA-256 of the origin (origins contain
    slashes). The directory is locked so that two witness processes cannot share it.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        """The state directory."""
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[bytes] | None = (directory / "LOCK").open("ab")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise StorageError(
                f"witness state {directory} is in use by another witness process"
            ) from None

    def close(self) -> None:
        """Release the directory lock."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _path(self, origin: str) -> Path:
        return self.directory / (hashlib.sha256(origin.encode()).hexdigest() + ".checkpoint")

    def load(self, origin: str) -> bytes | None:
        """The signed checkpoint last stored for ``origin``, or ``None``."""
        try:
            return self._path(origin).read_bytes()
        except FileNotFoundError:
            return None

    def store(self, origin: str, checkpoint: bytes) -> None:
        """Write to a temporary file, fsync, rename over the old one, fsync the directory."""
        replace_file(self._path(origin), checkpoint, temp_suffix=".partial")


class Witness:
    """A witness: checks ``add-checkpoint`` requests and persists before cosigning.

    Checking against the stored checkpoint and storing the new one happen under one lock,
    so two concurrent requests can never roll the witness back.
    """

    def __init__(
        self,
        cosigner: Cosigner,
        logs: Mapping[str, Sequence[Verifier]],
        state: WitnessState,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cosigner = cosigner
        """The witness key."""
        self.logs = {origin: tuple(keys) for origin, keys in logs.items()}
        """Trusted logs: origin to verifier keys."""
        self.state = state
        """Durable per-origin state."""
        self._clock = clock
        self._lock = threading.Lock()

    @classmethod
    def from_vkeys(cls, cosigner: Cosigner, vkeys: Iterable[str], state: WitnessState) -> Witness:
        """A witness trusting logs given as vkeys; a log's origin is its key name."""
        logs: dict[str, list[Verifier]] = {}
        for vkey in vkeys:
            verifier = Verifier.from_vkey(vkey)
            logs.setdefault(verifier.name, []).append(verifier)
        return cls(cosigner, logs, state)

    def latest(self, origin: str) -> Checkpoint | None:
        """The checkpoint last cosigned for ``origin``, or ``None``."""
        data = self.state.load(origin)
        if data is None:
            return None
        try:
            checkpoint = Checkpoint.from_text(Note.parse(data).text)
        except MalformedError as exc:
            raise StorageError(f"witness state for {origin!r} is damaged: {exc}") from exc
        if checkpoint.origin != origin:
            raise StorageError(f"witness state for {origin!r} holds another log's checkpoint")
        return checkpoint

    def add_checkpoint(self, body: bytes) -> bytes:
        """Handle an ``add-checkpoint`` body; return the cosignature line(s) to send.

        Raises :class:`WitnessRefusedError` for every refusal the specification names.
        The checkpoint is stored (with the log's verified signatures and this witness's
        cosignature, as the monitoring endpoint serves it) before the answer is returned.
        """
        request = parse_add_checkpoint(body)
        note, parsed = _parse_checkpoint_note(request.checkpoint)
        with self._lock:
            latest = self.latest(parsed.origin) if parsed.origin in self.logs else None
            checkpoint = check_add_checkpoint(request, self.logs, latest)
            timestamp = int(self._clock())
            if timestamp <= 0:  # "the timestamp MUST NOT be zero"
                raise StorageError(f"the witness clock reads {timestamp}; refusing to cosign")
            cosignature = self.cosigner.cosign(checkpoint, timestamp)
            if latest is None or checkpoint.size > latest.size:
                trusted = {(v.name, v.key_id) for v in self.logs[checkpoint.origin]}
                kept = [sig for sig in note.signatures if (sig.name, sig.key_id) in trusted]
                record = Note(note.text, (*kept, cosignature)).to_bytes()
                self.state.store(checkpoint.origin, record)
        return cosignature.line().encode()

    def cosigned(self, origin_hash: str) -> bytes | None:
        """The latest checkpoint cosigned for the log whose origin hashes to ``origin_hash``.

        ``origin_hash`` is the lowercase hex SHA-256 of the origin; ``None`` if the log is
        unknown or was never cosigned.
        """
        for origin in self.logs:
            if hashlib.sha256(origin.encode()).hexdigest() == origin_hash:
                return self.state.load(origin)
        return None


def witness_app(witness: Witness) -> Starlette:
    """An ASGI app serving ``POST /add-checkpoint`` and ``GET /<origin hash>/checkpoint``.

    The submission and monitoring prefixes are both the root. The blocking
    check-and-store runs in a worker thread. Storage failures answer 503 and cosign
    nothing.
    """

    async def monitor(request: Request) -> Response:
        origin_hash = str(request.path_params["origin_hash"])
        note = await run_in_threadpool(witness.cosigned, origin_hash)
        if note is None:
            return PlainTextResponse("no checkpoint cosigned for this log\n", 404)
        return Response(note, 200, media_type="text/plain; charset=utf-8")

    async def add_checkpoint(request: Request) -> Response:
        too_large = PlainTextResponse(
            f"request body is over {MAX_BODY_BYTES} bytes\n", 413, headers={"Connection": "close"}
        )
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > MAX_BODY_BYTES:
            return too_large
        chunks: list[bytes] = []
        received = 0
        async for chunk in request.stream():  # counted while read: chunked bodies too
            received += len(chunk)
            if received > MAX_BODY_BYTES:
                return too_large
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            lines = await run_in_threadpool(witness.add_checkpoint, body)
        except WitnessRefusedError as refusal:
            if refusal.status in (409, 422):  # possible evidence of a misbehaving log
                _log.warning("checkpoint refused", status=refusal.status, reason=str(refusal))
            # Exactly the content type given: Starlette would add "; charset=utf-8" to a
            # text/ media type, and 409 answers must be text/x.tlog.size.
            headers = {"Content-Type": refusal.content_type}
            return Response(refusal.body, refusal.status, headers=headers)
        except (StorageError, OSError) as exc:
            _log.error("witness state cannot be written", error=str(exc))
            return PlainTextResponse("witness state cannot be written\n", 503)
        return Response(lines, 200, media_type="text/plain; charset=utf-8")

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/{origin_hash:str}/checkpoint", monitor, methods=["GET"]),
        ]
    )
