"""The audit log's exceptions: one small tree under :class:`AuditError`.

- :class:`MalformedError`: input that does not parse or violates a format (a bad entry,
  note, checkpoint, key or proof). Nothing was changed.
- :class:`VerificationError`: well-formed data that fails a check (a signature, a proof, a
  hash in the log). ``index`` names the first bad entry when one can be named.
- :class:`StorageError`: the log directory cannot be used as asked (missing, already
  exists, locked by another writer, or damaged beyond automatic recovery).
- :class:`AnchorMismatchError`: the log does not extend the checkpoint its anchor holds
  (rollback or forged history); the writer refuses to sign anything.
- :class:`AnchorConflictError`: the anchor changed underneath the writer.
"""

from __future__ import annotations

__all__ = [
    "AnchorConflictError",
    "AnchorMismatchError",
    "AuditError",
    "EntryTooLargeError",
    "LogLockedError",
    "MalformedError",
    "StorageError",
    "VerificationError",
]


class AuditError(Exception):
    """Base class of every error raised by :mod:`audit`."""


class MalformedError(AuditError, ValueError):
    """Input does not follow its format; fix the input and retry."""


class EntryTooLargeError(MalformedError):
    """An entry's canonical JSON is larger than the 64 KiB limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"entry is {size} bytes of canonical JSON, over the {limit}-byte limit; "
            "move bulky data out of 'details' and log a digest of it instead"
        )
        self.size = size
        self.limit = limit


class VerificationError(AuditError):
    """A signature, proof or stored hash does not check out.

    ``index`` is the first entry found bad, or ``None`` when the failure is not about one
    entry (a checkpoint signature, a root hash).
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class StorageError(AuditError):
    """The log directory cannot be opened or written as asked."""


class LogLockedError(StorageError):
    """Another process already has the log open for writing."""


class AnchorMismatchError(VerificationError):
    """The log is not consistent with the checkpoint in its anchor; nothing will be signed.

    ``reason`` is a CamelCase condition reason (``CheckpointAnchorMismatch``,
    ``CheckpointAnchorUnverifiable``, ``LogRolledBack``).
    """

    def __init__(self, message: str, *, reason: str, index: int | None = None) -> None:
        super().__init__(message, index=index)
        self.reason = reason


class AnchorConflictError(StorageError):
    """The checkpoint anchor changed since the writer last read it (another writer?)."""
