"""Offline verification of a whole log directory, streamed in O(log n) memory.

:func:`verify_log` re-reads every record (length, CRC32C), re-hashes every entry,
rebuilds the tree and compares every stored hash and offset with what it recomputes, so
a change anywhere in the entry, hash or offset files is reported at the first entry it
affects. It then checks the checkpoint's signature and root, and, for each trusted older
checkpoint the caller saved, that the log still extends it (no rollback, no fork).

A writer stopped by a crash can leave, after its last signed checkpoint, a record cut
short or entries whose stored hashes and offsets were not written yet (the entry file is
synced first). That *unsigned tail* is what the writer repairs when it next opens the
log; it is not tampering, and nothing in it was ever signed or acknowledged in a receipt.
So inconsistencies a crash can cause — a torn last record, derived files shorter or
longer than the entries — are reported as :class:`UnsignedTail` when they lie past every
checkpoint being checked, and as tampering anywhere inside the signed prefix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.entry import Entry, entry_index_hint
from audit.errors import AuditError, MalformedError, StorageError, VerificationError
from audit.log import (
    CHECKPOINT_FILE,
    ENTRIES_FILE,
    HASHES_FILE,
    KEY_FILE,
    LOCK_FILE,
    OFFSETS_FILE,
    VKEY_FILE,
    read_origin,
)
from audit.merkle import HASH_SIZE, node_hash, stored_hash_count
from audit.note import Verifier, open_note
from audit.signing import load_signer, load_verifier
from audit.wal import MAGIC, RecordDamageError, read_records

__all__ = ["PROGRESS_EVERY", "UnsignedTail", "VerifyReport", "verify_log"]

PROGRESS_EVERY = 1 << 16
"""Entries between two calls of :func:`verify_log`'s ``progress``."""

_BUFFER = 1 << 20
_END = (b",", b"}")


@dataclass(frozen=True)
class UnsignedTail:
    """What a crash left after the signed prefix, not verified and never signed."""

    index: int
    """First entry index not verified (everything before it was)."""
    bytes: int
    """Bytes of the entry file from that entry's record on."""
    records: int
    """Complete records among those bytes (a torn last one is not counted)."""
    reason: str
    """What was found there (a record cut short, stored hashes missing, ...)."""

    def __str__(self) -> str:
        return (
            f"an unsigned tail of {self.bytes} bytes ({self.records} complete records) "
            f"from entry {self.index}, after the last checkpoint: {self.reason}. A crash "
            "leaves this; the writer repairs it when it next opens the log"
        )


class _TailError(Exception):
    """Raised inside the scan when the first crash-like inconsistency is past the prefix."""

    def __init__(self, index: int, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.index, self.offset, self.reason = index, offset, reason


@dataclass(frozen=True)
class VerifyReport:
    """What a successful verification established."""

    origin: str
    """The log's origin."""
    entries: int
    """Entries read and re-hashed."""
    checkpoint: Checkpoint
    """The verified latest checkpoint."""
    verified_by: tuple[str, ...]
    """Verifier keys whose signatures on the checkpoint checked out."""
    extends: tuple[int, ...] = field(default=())
    """Sizes of trusted older checkpoints the log was shown to extend."""
    tail: UnsignedTail | None = None
    """What a crash left after the signed prefix, if anything (see :class:`UnsignedTail`)."""

    @property
    def unpublished(self) -> int:
        """Entries after the latest checkpoint (appended since it was signed)."""
        return self.entries - self.checkpoint.size


def _writer_active(path: Path) -> bool:
    """Whether a writer holds one of the log's locks (directory, LOCK, entry file)."""
    targets = (
        (path, os.O_RDONLY | os.O_DIRECTORY),
        (path / LOCK_FILE, os.O_RDONLY),
        (path / ENTRIES_FILE, os.O_RDONLY),
    )
    for target, flags in targets:
        try:
            fd = os.open(target, flags)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        finally:
            os.close(fd)
    return False


def _check_keys(path: Path, verifiers: Sequence[Verifier] | None) -> Sequence[Verifier]:
    try:
        own = load_verifier(path / VKEY_FILE) if (path / VKEY_FILE).exists() else None
        if (path / KEY_FILE).exists():
            signer = load_signer(path / KEY_FILE)
            if own is not None and signer.verifier != own:
                raise VerificationError(f"{KEY_FILE} does not match {VKEY_FILE}")
    except (MalformedError, StorageError) as exc:
        raise VerificationError(str(exc)) from exc
    if verifiers:
        return verifiers
    if own is None:
        raise VerificationError(f"no verifier key given and {path / VKEY_FILE} is missing")
    return [own]


def verify_log(
    path: Path | str,
    verifiers: Sequence[Verifier] | None = None,
    *,
    trusted: Sequence[bytes] = (),
    deep: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Verify the log at ``path``; raise :class:`~audit.errors.VerificationError` if bad.

    ``verifiers`` are the trusted log keys (default: the directory's own ``log.vkey``,
    which only proves self-consistency). ``trusted`` are signed checkpoints saved
    earlier: the log must still contain each of them. ``deep`` also parses every entry
    against the schema (slower). ``progress(done, signed)`` is called every
    :data:`PROGRESS_EVERY` entries with the entries verified so far and the checkpoint's size.
    """
    path = Path(path)
    try:
        origin = read_origin(path)
    except (MalformedError, StorageError) as exc:
        raise VerificationError(str(exc)) from exc
    keys = _check_keys(path, verifiers)
    try:
        note, verified = open_note((path / CHECKPOINT_FILE).read_bytes(), keys)
        checkpoint = Checkpoint.from_text(note.text)
        if checkpoint.origin != origin:
            raise VerificationError(f"it is for {checkpoint.origin!r}, the log is {origin!r}")
        saved = [open_checkpoint(t, keys, origin=origin) for t in trusted]
    except (MalformedError, OSError) as exc:
        raise VerificationError(f"checkpoint: {exc}") from exc
    except VerificationError as exc:
        raise VerificationError(f"checkpoint: {exc}") from exc
    roots = {checkpoint.size: checkpoint.root}
    for old in saved:
        if roots.setdefault(old.size, old.root) != old.root:
            raise VerificationError(
                f"fork: two checkpoints of size {old.size} with different roots"
            )
    entries, tail = _stream(
        path, roots, deep, quiescent=not _writer_active(path), progress=progress
    )
    if entries < max(roots):
        missing = entries
        raise VerificationError(
            f"the log holds {entries} entries but a checkpoint covers {max(roots)}: "
            f"entries from index {missing} on are missing (truncation or rollback)",
            index=missing,
        )
    return VerifyReport(
        origin=origin,
        entries=entries,
        checkpoint=checkpoint,
        verified_by=tuple(v.vkey for v in verified),
        extends=tuple(sorted(o.size for o in saved)),
        tail=tail,
    )


def _fold(stack: list[bytes]) -> bytes:
    h = stack[-1]
    for left in reversed(stack[:-1]):
        h = node_hash(left, h)
    return h


def _stream(
    path: Path,
    roots: dict[int, bytes],
    deep: bool,
    *,
    quiescent: bool,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, UnsignedTail | None]:
    """Re-hash every entry, comparing stored hashes, offsets and checkpoint roots.

    The tree's right edge is kept inline (as in :class:`~audit.merkle.CompactRange`): this
    loop runs once per entry and is what sets the verification speed. Returns the number
    of entries verified and the unsigned tail a crash left, if any.
    """
    signed = max(roots)
    wal = os.open(path / ENTRIES_FILE, os.O_RDONLY)
    try:
        return _scan(path, wal, roots, deep, quiescent=quiescent, progress=progress), None
    except _TailError as cut:
        if cut.index < signed:  # pragma: no cover - _scan raises VerificationError there
            raise
        return cut.index, _tail(wal, cut)
    finally:
        os.close(wal)


def _tail(wal: int, cut: _TailError) -> UnsignedTail:
    records = 0
    with contextlib.suppress(RecordDamageError):
        for _ in read_records(wal, cut.offset, cut.index):
            records += 1
    size = os.fstat(wal).st_size
    return UnsignedTail(cut.index, max(0, size - cut.offset), records, cut.reason)


def _scan(
    path: Path,
    wal: int,
    roots: dict[int, bytes],
    deep: bool,
    *,
    quiescent: bool,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    signed = max(roots)
    next_report = PROGRESS_EVERY if progress is not None else -1

    def crash_like(index: int, offset: int, reason: str, error: VerificationError) -> Exception:
        """Past the signed prefix a crash explains it; inside, it is tampering."""
        return _TailError(index, offset, reason) if index >= signed else error

    sha256 = hashlib.sha256
    stack: list[bytes] = []
    size = 0
    # Checkpoint sizes to compare roots at, in order; an int compare per entry is cheaper
    # than a dict lookup, and this loop is what sets the verification speed.
    pending = sorted(s for s in roots if s > 0)
    next_root = pending.pop(0) if pending else -1
    pos = len(MAGIC)
    with contextlib.ExitStack() as ctx:
        hashes = ctx.enter_context((path / HASHES_FILE).open("rb", buffering=_BUFFER))
        offsets = ctx.enter_context((path / OFFSETS_FILE).open("rb", buffering=_BUFFER))
        if os.pread(wal, len(MAGIC), 0) != MAGIC:
            raise VerificationError(f"{ENTRIES_FILE} does not start with the entry-file header")
        read_hash, read_offset = hashes.read, offsets.read
        try:
            for pos, data in read_records(wal, len(MAGIC), 0):
                stored = read_offset(8)
                if stored != pos.to_bytes(8, "big"):
                    error = VerificationError(
                        f"entry {size}: {OFFSETS_FILE} does not match the entry file",
                        index=size,
                    )
                    if len(stored) < 8:  # the offsets file ends here: not written yet
                        raise crash_like(size, pos, f"{OFFSETS_FILE} ends early", error)
                    raise error
                h = sha256(b"\x00" + data).digest()
                got = read_hash(HASH_SIZE)
                if got != h:
                    if len(got) < HASH_SIZE:
                        raise crash_like(
                            size, pos, f"{HASHES_FILE} ends early", _hash_mismatch(size)
                        )
                    raise _hash_mismatch(size)
                n = size
                while n & 1:
                    h = sha256(b"\x01" + stack.pop() + h).digest()
                    got = read_hash(HASH_SIZE)
                    if got != h:
                        if len(got) < HASH_SIZE:
                            raise crash_like(
                                size, pos, f"{HASHES_FILE} ends early", _hash_mismatch(size)
                            )
                        raise _hash_mismatch(size)
                    n >>= 1
                stack.append(h)
                expected = b'"index":%d' % size
                at = data.rfind(b'"index":')
                after = at + len(expected)
                if not data.startswith(expected, at) or data[after : after + 1] not in _END:
                    raise VerificationError(
                        f"entry {size} says it is entry {entry_index_hint(data)}: "
                        "entries were reordered, inserted or removed",
                        index=size,
                    )
                if deep:
                    _deep_check(size, data)
                size += 1
                if size == next_report:
                    progress(size, signed)  # type: ignore[misc]  # set whenever next_report is
                    next_report += PROGRESS_EVERY
                if size == next_root:
                    if _fold(stack) != roots[size]:
                        raise VerificationError(
                            f"the first {size} entries do not hash to the checkpoint root "
                            f"of size {size}",
                            index=size - 1,
                        )
                    next_root = pending.pop(0) if pending else -1
        except RecordDamageError as damage:
            error = VerificationError(
                f"{ENTRIES_FILE}: {damage} (a torn write is repaired when the log is next "
                "opened for writing; anything else is tampering or disk damage)",
                index=damage.index,
            )
            if damage.torn:
                raise crash_like(
                    damage.index,
                    damage.offset,
                    f"the last record is cut short ({damage.reason})",
                    error,
                ) from None
            raise error from damage
        if quiescent and size >= signed:
            # Derived data past the entries: stored for records a crash cut, or appended
            # to; either way past every checkpoint. (Inside the prefix it is caught above.)
            extra_hashes = os.fstat(hashes.fileno()).st_size - stored_hash_count(size) * HASH_SIZE
            extra_offsets = os.fstat(offsets.fileno()).st_size - 8 * size
            if extra_hashes or extra_offsets:
                raise _TailError(
                    size,
                    os.fstat(wal).st_size,
                    f"{HASHES_FILE} or {OFFSETS_FILE} hold data for entries the entry file "
                    "does not have",
                )
    return size


def _hash_mismatch(index: int) -> VerificationError:
    return VerificationError(
        f"entry {index}: {HASHES_FILE} does not match the re-hashed entries "
        "(entry or stored hash altered)",
        index=index,
    )


def _deep_check(index: int, data: bytes) -> None:
    try:
        entry = Entry.from_bytes(data)
    except AuditError as exc:
        raise VerificationError(f"entry {index}: {exc}", index=index) from exc
    if entry.index != index:
        raise VerificationError(f"entry {index} says it is entry {entry.index}", index=index)
