"""C2SP transparency-log checkpoints (c2sp.org/tlog-checkpoint).

Pure functions, no I/O. A checkpoint is a signed note whose text is the log's origin,
its tree size in decimal, the base64 root hash, and optional extension lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from audit.errors import MalformedError, VerificationError
from audit.merkle import HASH_SIZE
from audit.note import (
    Signer,
    Verifier,
    b64decode,
    b64encode,
    open_note,
    sign_note,
)

__all__ = ["Checkpoint", "open_checkpoint", "sign_checkpoint"]


@dataclass(frozen=True)
class Checkpoint:
    """The signed statement "log ``origin`` has ``size`` entries with root ``root``"."""

    origin: str
    """Unique identifier of the log, such as ``audit.regsandbox.example/prod``."""
    size: int
    """Number of entries."""
    root: bytes
    """RFC 6962 root hash of the first ``size`` entries."""
    extensions: tuple[str, ...] = ()
    """Opaque extra lines (not recommended; not auditable)."""

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise MalformedError("checkpoint origin must be one non-empty line")
        if self.size < 0:
            raise MalformedError("checkpoint size must not be negative")
        if len(self.root) != HASH_SIZE:
            raise MalformedError(f"checkpoint root must be {HASH_SIZE} bytes")
        for line in self.extensions:
            if not line or "\n" in line:
                raise MalformedError("checkpoint extension lines must be non-empty single lines")

    def text(self) -> str:
        """The note text of this checkpoint."""
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse checkpoint note text (signatures already stripped)."""
        if not text.endswith("\n"):
            raise MalformedError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedError("checkpoint text needs origin, size and root hash lines")
        origin, size_text, root_text, *extensions = lines
        if not size_text.isascii() or not size_text.isdigit():
            raise MalformedError(f"checkpoint size {size_text!r} is not a decimal number")
        if size_text != str(int(size_text)):
            raise MalformedError(f"checkpoint size {size_text!r} has leading zeroes")
        size = int(size_text)
        if size >= 2**63:
            raise MalformedError("checkpoint size is too large")
        return cls(origin, size, b64decode(root_text, "checkpoint root hash"), tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[Signer]) -> bytes:
    """The checkpoint as a signed note, signed by every signer (log key, co-signing keys)."""
    return sign_note(checkpoint.text(), signers)


def open_checkpoint(
    data: bytes, verifiers: Iterable[Verifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and parse it.

    ``origin``, if given, must match the checkpoint's first line. Raises
    :class:`~audit.errors.VerificationError` if no trusted key signed it.
    """
    note, _ = open_note(data, verifiers)
    checkpoint = Checkpoint.from_text(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError(f"checkpoint is for log {checkpoint.origin!r}, expected {origin!r}")
    return checkpoint
