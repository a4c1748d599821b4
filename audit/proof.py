"""Offline-verifiable receipts in the C2SP tlog-proof format (c2sp.org/tlog-proof@v1).

Pure functions, no I/O. A receipt bundles the entry's index, its inclusion proof and the
signed checkpoint it leads to, so anyone holding the entry bytes and the log's verifier
key can check that the entry is in the log::

    c2sp.org/tlog-proof@v1
    [extra <base64>]
    index <n>
    <base64 hash>            (zero or more, leaf's sibling first)

    <signed checkpoint, verbatim>
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.errors import MalformedError
from audit.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from audit.note import Verifier, b64decode, b64encode

__all__ = ["MAGIC", "TlogProof", "verify_tlog_proof"]

MAGIC = "c2sp.org/tlog-proof@v1"
"""First line of every tlog-proof."""


@dataclass(frozen=True)
class TlogProof:
    """A parsed tlog-proof (not yet verified)."""

    index: int
    """Zero-based index of the entry."""
    hashes: tuple[bytes, ...]
    """RFC 6962 inclusion proof, the leaf's sibling first."""
    checkpoint: bytes
    """The signed checkpoint note the proof leads to, verbatim."""
    extra: bytes | None = None
    """Opaque, unauthenticated extra data."""

    def __post_init__(self) -> None:
        if self.index < 0:
            raise MalformedError("proof index must not be negative")
        if any(len(h) != HASH_SIZE for h in self.hashes):
            raise MalformedError(f"proof hashes must be {HASH_SIZE} bytes")
        if self.extra is not None and not self.extra:
            raise MalformedError("proof extra data, when present, must not be empty")

    def to_bytes(self) -> bytes:
        """The proof in its text form."""
        lines = [MAGIC]
        if self.extra is not None:
            lines.append(f"extra {b64encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64encode(h) for h in self.hashes)
        return ("\n".join(lines) + "\n\n").encode() + self.checkpoint

    @classmethod
    def parse(cls, data: bytes) -> TlogProof:
        """Parse a tlog-proof; the embedded checkpoint is kept as bytes, unverified."""
        split = data.find(b"\n\n")
        if split < 0:
            raise MalformedError("tlog-proof has no blank line before its checkpoint")
        try:
            head = data[:split].decode("ascii")
        except UnicodeDecodeError as exc:
            raise MalformedError("tlog-proof header is not ASCII") from exc
        lines = head.split("\n")
        if lines[0] != MAGIC:
            raise MalformedError(f"not a tlog-proof: first line must be {MAGIC}")
        pos = 1
        extra = None
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = b64decode(lines[pos][6:], "tlog-proof extra data")
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise MalformedError("tlog-proof has no index line")
        digits = lines[pos][6:]
        if not digits.isascii() or not digits.isdigit() or digits != str(int(digits)):
            raise MalformedError(f"tlog-proof index {digits!r} is not a plain decimal")
        hashes = tuple(b64decode(line, "tlog-proof hash") for line in lines[pos + 1 :])
        checkpoint = data[split + 2 :]
        if not checkpoint:
            raise MalformedError("tlog-proof has no checkpoint")
        return cls(int(digits), hashes, checkpoint, extra)


def verify_tlog_proof(
    proof: TlogProof | bytes,
    entry: bytes,
    verifiers: Iterable[Verifier],
    *,
    origin: str | None = None,
) -> Checkpoint:
    """Check that ``entry`` (its exact bytes) is in the log, per ``proof``.

    Verifies the checkpoint signature against ``verifiers`` (and ``origin``, if given),
    then the inclusion proof. Returns the checkpoint; raises
    :class:`~audit.errors.VerificationError` or :class:`~audit.errors.MalformedError`.
    """
    parsed = proof if isinstance(proof, TlogProof) else TlogProof.parse(proof)
    checkpoint = open_checkpoint(parsed.checkpoint, verifiers, origin=origin)
    verify_inclusion(
        leaf_hash(entry), parsed.index, checkpoint.size, list(parsed.hashes), checkpoint.root
    )
    return checkpoint
