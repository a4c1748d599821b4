"""Write-ahead record framing for the entry file.

The entry file starts with :data:`MAGIC` and then holds one record per entry::

    u32 length (big-endian) | u32 CRC32C(length bytes || data) | data

CRC32C comes from the ``crc32c`` package (hardware-accelerated). :func:`read_records`
streams records from a file in large reads and reports the first damaged record with
:class:`RecordDamageError`, saying whether it could be a write torn by a crash (the last
record, running to the end of the file) or damage in the middle of the file.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import crc32c

from audit.entry import MAX_ENTRY_BYTES

__all__ = [
    "HEADER",
    "MAGIC",
    "RecordDamageError",
    "encode_record",
    "read_records",
    "record_crc",
]

MAGIC = b"regsandbox-wal1\n"
"""First 16 bytes of every entry file."""

HEADER = struct.Struct(">II")
"""Record header: data length, CRC32C."""

_LEN = struct.Struct(">I")
_READ_SIZE = 1 << 20


def record_crc(data: bytes) -> int:
    """CRC32C of a record: covers the length field and the data."""
    return int(crc32c.crc32c(data, crc32c.crc32c(_LEN.pack(len(data)))))


def encode_record(data: bytes) -> bytes:
    """Frame ``data`` as one record."""
    return HEADER.pack(len(data), record_crc(data)) + data


@dataclass
class RecordDamageError(Exception):
    """The record at ``offset`` (entry ``index``) cannot be read back intact.

    ``torn`` is true when the damage is confined to the end of the file and no longer
    than one record could be: what a crash in the middle of a write leaves behind.
    """

    index: int
    """Index of the entry whose record is damaged."""
    offset: int
    """Byte offset of the record in the entry file."""
    reason: str
    """What is wrong."""
    torn: bool
    """Whether this looks like a torn final write (safe to truncate if unacknowledged)."""

    def __str__(self) -> str:
        return f"entry {self.index} at byte {self.offset}: {self.reason}"


def read_records(fd: int, offset: int, index: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, data)`` for each record from ``offset`` to the end of file ``fd``.

    ``index`` is the entry index of the first record. Raises :class:`RecordDamageError` at the
    first record that is cut short or fails its CRC.
    """
    file_size = os.fstat(fd).st_size
    buf = b""
    pos = 0  # position of the next record in buf
    base = offset  # file offset of buf[0]
    read_at = offset
    header_size = HEADER.size
    length_crcs: dict[int, int] = {}  # CRC32C of the length field, by length
    while True:
        if len(buf) - pos < header_size:
            buf, base, pos = buf[pos:], base + pos, 0
            chunk = os.pread(fd, _READ_SIZE, read_at)
            read_at += len(chunk)
            buf += chunk
            if len(buf) == 0:
                return
            if len(buf) < header_size:
                raise RecordDamageError(index, base, "record header is cut short", torn=True)
        length, crc = HEADER.unpack_from(buf, pos)
        end = pos + header_size + length
        if length > MAX_ENTRY_BYTES:
            torn = base + pos + header_size + MAX_ENTRY_BYTES >= file_size
            raise RecordDamageError(index, base + pos, f"record length {length} is too large", torn)
        while len(buf) < end:
            buf, base, end, pos = buf[pos:], base + pos, end - pos, 0
            chunk = os.pread(fd, _READ_SIZE, read_at)
            if not chunk:
                raise RecordDamageError(index, base, "record is cut short", torn=True)
            read_at += len(chunk)
            buf += chunk
        data = buf[pos + header_size : end]
        seed = length_crcs.get(length)
        if seed is None:
            seed = length_crcs[length] = crc32c.crc32c(_LEN.pack(length))
        if crc32c.crc32c(data, seed) != crc:
            torn = base + end == file_size
            raise RecordDamageError(index, base + pos, "record CRC32C does not match", torn)
        yield base + pos, data
        pos = end
        index += 1
