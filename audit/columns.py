"""Append-only files of fixed-width records: stored tree hashes and entry offsets.

Both are derived from the entry file and can be rebuilt from it; they exist so that
proofs and random access to entries take O(log n) and O(1) reads.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from audit.merkle import HASH_SIZE, stored_hash_index

__all__ = ["Column", "HashColumn", "OffsetColumn"]

_OFFSET = struct.Struct(">Q")


class Column:
    """A file of ``width``-byte records, appended at the end, read with ``pread``."""

    def __init__(self, path: Path, width: int, *, writable: bool) -> None:
        self.path = path
        """The file."""
        self.width = width
        """Bytes per record."""
        flags = (os.O_RDWR | os.O_APPEND) if writable else os.O_RDONLY
        self._fd = os.open(path, flags)
        self._end = os.fstat(self._fd).st_size

    @property
    def count(self) -> int:
        """Number of complete records in the file."""
        return self._end // self.width

    def refresh(self) -> None:
        """Re-read the file size (for readers while a writer appends)."""
        self._end = os.fstat(self._fd).st_size

    def append(self, data: bytes) -> None:
        """Append whole records."""
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._end += len(data)

    def read(self, index: int, count: int = 1) -> bytes:
        """``count`` records starting at ``index``."""
        data = os.pread(self._fd, count * self.width, index * self.width)
        if len(data) != count * self.width:
            raise IndexError(f"{self.path.name}: record {index + count - 1} is past the end")
        return data

    def truncate(self, count: int) -> None:
        """Drop every record from ``count`` on (and any partial record)."""
        os.ftruncate(self._fd, count * self.width)
        self._end = count * self.width

    def sync(self) -> None:
        """Make appended records durable."""
        os.fdatasync(self._fd)

    def close(self) -> None:
        """Close the file."""
        os.close(self._fd)


class HashColumn(Column):
    """Stored Merkle hashes in :func:`audit.merkle.stored_hash_index` order."""

    def __init__(self, path: Path, *, writable: bool) -> None:
        super().__init__(path, HASH_SIZE, writable=writable)

    def subtree_hash(self, level: int, n: int) -> bytes:
        """Hash of the complete subtree ``(level, n)`` (a :class:`~audit.merkle.HashReader`)."""
        return self.read(stored_hash_index(level, n))


class OffsetColumn(Column):
    """Byte offset of each entry's record in the entry file."""

    def __init__(self, path: Path, *, writable: bool) -> None:
        super().__init__(path, _OFFSET.size, writable=writable)

    def offset(self, index: int) -> int:
        """Offset of entry ``index``."""
        value: int = _OFFSET.unpack(self.read(index))[0]
        return value

    @staticmethod
    def pack(offsets: list[int]) -> bytes:
        """Encode offsets for :meth:`append`."""
        return struct.pack(f">{len(offsets)}Q", *offsets)
