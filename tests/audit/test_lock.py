"""One writer per log, even when the LOCK file is deleted or replaced under it.

Issue 14: deleting ``LOCK`` while the service ran let a second writer in; the two
interleaved records and the log could no longer be opened. The writer now also locks the
log directory, which cannot be swapped underneath it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from audit.errors import LogLockedError
from audit.log import LOCK_FILE, AuditLog
from audit.note import Signer
from audit.verify import verify_log

from .helpers import ORIGIN, event

_WRITER = """
import sys
from audit.log import AuditLog
from audit.note import Signer
log = AuditLog(sys.argv[1], Signer.from_private_key(sys.argv[2]))
log.append_batch([])
print("open", flush=True)
sys.stdin.readline()
log.close()
"""


def _new_log(path: Path) -> Signer:
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(path, ORIGIN, signer) as log:
        log.append_batch([event(i) for i in range(5)])
    return signer


def test_deleting_lock_under_a_running_writer_does_not_let_a_second_one_in(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    signer = _new_log(path)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), signer.private_key],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == "open\n"
        (path / LOCK_FILE).unlink()
        with pytest.raises(LogLockedError, match="already open for writing") as info:
            AuditLog(path, signer)
        assert "the log directory" in str(info.value)
        # A fresh LOCK file put in its place does not help either.
        (path / LOCK_FILE).write_bytes(b"")
        with pytest.raises(LogLockedError):
            AuditLog(path, signer)
    finally:
        assert writer.stdin is not None
        writer.stdin.write("\n")
        writer.stdin.close()
        assert writer.wait(timeout=30) == 0
    with AuditLog(path, signer) as log:  # the log still opens and appends afterwards
        assert log.size == 5
        log.append(event(5))
    assert verify_log(path, [signer.verifier]).entries == 6


def test_in_one_process_a_second_writer_is_refused_after_lock_is_deleted(
    tmp_path: Path,
) -> None:
    path = tmp_path / "log"
    signer = _new_log(path)
    with AuditLog(path, signer) as first:
        (path / LOCK_FILE).unlink()
        with pytest.raises(LogLockedError):
            AuditLog(path, signer)
        first.append(event(7))
    with AuditLog(path, signer) as log:
        assert log.size == 6


def test_verify_sees_a_running_writer_without_its_lock_file(tmp_path: Path) -> None:
    """A verify during appends must not mistake in-flight derived data for tampering."""
    from audit.verify import _writer_active

    path = tmp_path / "log"
    signer = _new_log(path)
    assert not _writer_active(path)
    with AuditLog(path, signer):
        (path / LOCK_FILE).unlink()
        assert _writer_active(path)


def test_the_entry_file_itself_is_locked_by_the_writer(tmp_path: Path) -> None:
    """Where a directory cannot be locked (some network filesystems), the entry file is."""
    import fcntl
    import os

    from audit.log import ENTRIES_FILE

    path = tmp_path / "log"
    signer = _new_log(path)
    with AuditLog(path, signer):
        fd = os.open(path / ENTRIES_FILE, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    fd = os.open(path / ENTRIES_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released on close
    finally:
        os.close(fd)
