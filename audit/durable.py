"""Durable file replacement for the audit log's small files.

A checkpoint, an anchor or a witness's state is written whole to a temporary file
beside its target, fsynced, renamed over the target and the directory fsynced: after a
crash the target holds the old bytes or the new ones, never a mix, and the rename
itself survives.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "replace_file"]


def fsync_dir(path: Path) -> None:
    """Flush directory ``path``'s entries (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes, *, temp_suffix: str = ".tmp") -> None:
    """Replace ``path`` with ``data`` atomically and durably (mode 0644 if new).

    The bytes go first to ``<path><temp_suffix>``, which is left behind only if the
    process dies before the rename.

    Raises:
        OSError: the file or its directory could not be written.
    """
    tmp = path.with_name(path.name + temp_suffix)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    fsync_dir(path.parent)
