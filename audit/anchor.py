"""The checkpoint anchor: the log's memory of what it signed, kept off the log's volume.

c2sp.org/tlog-checkpoint: a log must never sign a checkpoint inconsistent with one it
signed before. The log directory alone cannot guarantee that: whoever can write to its
volume (without the signing key) can put back an older signed checkpoint, rewrite the
entries after it with valid CRCs and hashes, and wait for the service to sign the forgery
on its next start. So the writer also keeps its latest signed checkpoint in an *anchor*,
somewhere the volume's writer cannot rewrite (a file on another volume, or a Kubernetes
object only the audit service may update: :mod:`sandbox.kube.audit_anchor`), checks the
log against it before signing anything, and advances it by compare-and-swap after each
checkpoint it signs.

An anchor stores the signed checkpoint note verbatim; the log verifies it with its own
key(s) when it loads it, so an anchor that was replaced by anything the log did not sign
is refused too. :class:`CheckpointAnchor` is the narrow interface (load, compare-and-swap);
:class:`FileCheckpointAnchor` keeps it in a file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from audit.durable import replace_file
from audit.errors import AnchorConflictError, StorageError

__all__ = [
    "ABSENT",
    "AnchorRecord",
    "CheckpointAnchor",
    "FileCheckpointAnchor",
]

ABSENT = "absent"
"""Version of a file anchor that holds nothing yet."""


@dataclass(frozen=True)
class AnchorRecord:
    """What an anchor holds: a signed checkpoint note (or nothing) and its version."""

    note: bytes | None
    """The signed checkpoint note last stored, verbatim; ``None`` if none was stored yet."""
    version: str
    """Opaque token naming this state, passed back to :meth:`CheckpointAnchor.swap`."""


class CheckpointAnchor(Protocol):
    """Where the log keeps its latest signed checkpoint, out of its volume writer's reach."""

    @property
    def description(self) -> str:
        """Where the anchor is, for messages (``file /anchor/checkpoint``, ``ConfigMap …``)."""
        ...

    def load(self) -> AnchorRecord:
        """The current state; raise :class:`~audit.errors.StorageError` if unreachable."""
        ...

    def swap(self, expected: str, note: bytes) -> AnchorRecord:
        """Store ``note`` if the anchor is still at version ``expected``; return the new state.

        Raises :class:`~audit.errors.AnchorConflictError` if it changed since (someone
        else wrote it), :class:`~audit.errors.StorageError` if it cannot be written.
        """
        ...


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class FileCheckpointAnchor:
    """An anchor in one file, on a volume the log's own volume writer cannot write.

    Swaps hold an exclusive ``flock`` on ``<file>.lock`` and compare the SHA-256 of the
    current contents with the expected version; the new contents are written to a
    temporary file, fsynced and renamed over the old one.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        """The anchor file."""

    @property
    def description(self) -> str:
        """``file <path>``."""
        return f"file {self.path}"

    def _read(self) -> AnchorRecord:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return AnchorRecord(None, ABSENT)
        except OSError as exc:
            raise StorageError(f"cannot read the checkpoint anchor {self.path}: {exc}") from exc
        return AnchorRecord(data, _digest(data))

    def load(self) -> AnchorRecord:
        """The anchor file's contents and their digest (``absent`` when there is no file)."""
        return self._read()

    def swap(self, expected: str, note: bytes) -> AnchorRecord:
        """Replace the file with ``note`` if its digest is still ``expected``."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = os.open(
                self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644
            )
        except OSError as exc:
            raise StorageError(f"cannot lock the checkpoint anchor {self.path}: {exc}") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self._read()
            if current.version != expected:
                raise AnchorConflictError(
                    f"the checkpoint anchor {self.path} changed underneath this log "
                    f"(expected {expected}, found {current.version}): another writer?"
                )
            replace_file(self.path, note)
        except OSError as exc:
            raise StorageError(f"cannot write the checkpoint anchor {self.path}: {exc}") from exc
        finally:
            os.close(lock)
        return AnchorRecord(note, _digest(note))
