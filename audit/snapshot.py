"""A consistent copy of a live audit log, cut at its latest signed checkpoint.

A log directory copied file by file while its writer appends is seldom consistent: the
hash and offset files run ahead of the entry file (or the entry file ends in half a
record), and the copy then fails verification, as tampering would. :func:`snapshot`
copies exactly what the latest checkpoint covers — the entry records, their stored
hashes and offsets, the checkpoint itself, the log's configuration and its verifier key
— and never the signing key or the writer's lock. The copy is an ordinary log
directory: it verifies offline (``sandboxctl audit verify``) like the original, and no
writer has to be paused to take it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from audit.checkpoint import Checkpoint
from audit.errors import StorageError
from audit.log import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENTRIES_FILE,
    HASHES_FILE,
    OFFSETS_FILE,
    VKEY_FILE,
    read_origin,
)
from audit.merkle import HASH_SIZE, stored_hash_count
from audit.note import Note
from audit.wal import HEADER, MAGIC

__all__ = ["snapshot"]

_OFFSET_SIZE = 8
_CHUNK = 1 << 20


def _copy_prefix(source: Path, dest: Path, length: int) -> None:
    """Copy the first ``length`` bytes of ``source``; fail if it is shorter."""
    with source.open("rb") as src, dest.open("xb") as out:
        left = length
        while left:
            chunk = src.read(min(left, _CHUNK))
            if not chunk:
                raise StorageError(
                    f"{source.name} holds fewer bytes than its checkpoint covers; "
                    "the log is damaged or not a regsandbox audit log"
                )
            out.write(chunk)
            left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())


def _entries_end(source: Path, size: int) -> int:
    """Where the record of entry ``size - 1`` ends in the entry file."""
    if size == 0:
        return len(MAGIC)
    with (source / OFFSETS_FILE).open("rb") as offsets:
        offsets.seek((size - 1) * _OFFSET_SIZE)
        raw = offsets.read(_OFFSET_SIZE)
    if len(raw) != _OFFSET_SIZE:
        raise StorageError(f"{OFFSETS_FILE} holds fewer entries than the checkpoint's {size}")
    last = int.from_bytes(raw, "big")
    fd = os.open(source / ENTRIES_FILE, os.O_RDONLY)
    try:
        header = os.pread(fd, HEADER.size, last)
    finally:
        os.close(fd)
    if len(header) != HEADER.size:
        raise StorageError(f"{ENTRIES_FILE} ends before entry {size - 1}")
    length, _ = HEADER.unpack(header)
    return last + HEADER.size + int(length)


def snapshot(source: Path | str, dest: Path | str) -> Checkpoint:
    """Copy the log at ``source`` as of its latest checkpoint into the new ``dest``.

    Safe while a writer appends to ``source``. ``dest`` must not exist or be empty.
    Nothing is verified here: run :func:`audit.verify.verify_log` on the copy (with the
    log's published key) as on any log. Returns the checkpoint the copy ends at.
    """
    source, dest = Path(source), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise StorageError(f"{dest} is not empty; a snapshot goes to a new directory")
    origin = read_origin(source)
    try:
        note = (source / CHECKPOINT_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise StorageError(f"{source} has no {CHECKPOINT_FILE}") from exc
    checkpoint = Checkpoint.from_text(Note.parse(note).text)
    if checkpoint.origin != origin:
        raise StorageError(f"the checkpoint is for {checkpoint.origin!r}, the log is {origin!r}")
    size = checkpoint.size
    # The writer publishes a checkpoint only once its entries, hashes and offsets are on
    # disk, and only appends after them: these prefixes are complete and stay unchanged.
    end = _entries_end(source, size)
    dest.mkdir(parents=True, exist_ok=True)
    _copy_prefix(source / ENTRIES_FILE, dest / ENTRIES_FILE, end)
    _copy_prefix(source / HASHES_FILE, dest / HASHES_FILE, stored_hash_count(size) * HASH_SIZE)
    _copy_prefix(source / OFFSETS_FILE, dest / OFFSETS_FILE, size * _OFFSET_SIZE)
    shutil.copyfile(source / CONFIG_FILE, dest / CONFIG_FILE)
    if (source / VKEY_FILE).exists():
        shutil.copyfile(source / VKEY_FILE, dest / VKEY_FILE)
    (dest / CHECKPOINT_FILE).write_bytes(note)  # last: the copy is complete once it exists
    return checkpoint
