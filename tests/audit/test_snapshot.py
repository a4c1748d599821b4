"""A snapshot of a log being written verifies offline; a file-by-file copy does not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from audit.errors import StorageError, VerificationError
from audit.log import KEY_FILE, LOCK_FILE, AuditLog
from audit.note import Signer
from audit.snapshot import snapshot
from audit.verify import verify_log
from sandbox.cli import app

from .helpers import ORIGIN, event


def _live_log(path: Path) -> tuple[AuditLog, Signer]:
    """A writer holding 5 checkpointed entries and 3 more that no checkpoint covers yet."""
    signer = Signer.generate(ORIGIN)
    AuditLog.create(path, ORIGIN, signer).close()
    log = AuditLog(path, signer, checkpoint_interval=3600)
    log.append_batch([event(i) for i in range(5)])
    log.publish_checkpoint()
    log.append_batch([event(i) for i in range(5, 8)])
    return log, signer


def test_a_snapshot_taken_while_writing_verifies_as_of_its_checkpoint(tmp_path: Path) -> None:
    log, signer = _live_log(tmp_path / "log")
    try:
        # A file-by-file copy (tar, kubectl cp) while the writer appends: the entry file
        # is copied, the writer appends, then the hash and offset files are copied. Past
        # the checkpoint the files disagree, which verify reports as an unsigned tail
        # (what a crash leaves too) ...
        naive = tmp_path / "naive"
        naive.mkdir()
        shutil.copyfile(tmp_path / "log" / "entries.wal", naive / "entries.wal")
        log.append_batch([event(8)])
        for name in ("hashes", "offsets", "checkpoint", "log.json", "log.vkey"):
            shutil.copyfile(tmp_path / "log" / name, naive / name)
        report = verify_log(naive, [signer.verifier])
        assert report.tail is not None
        assert (report.entries, report.checkpoint.size) == (8, 5)

        checkpoint = snapshot(tmp_path / "log", tmp_path / "copy")
        assert checkpoint.size == 5
        report = verify_log(tmp_path / "copy", [signer.verifier], deep=True)
        assert (report.entries, report.checkpoint.size) == (5, 5)
        assert not (tmp_path / "copy" / KEY_FILE).exists()  # the signing key stays home
        assert not (tmp_path / "copy" / LOCK_FILE).exists()

        # A later snapshot extends the earlier one: same root at size 5.
        log.publish_checkpoint()
        later = snapshot(tmp_path / "log", tmp_path / "later")
        assert later.size == 9
        old = (tmp_path / "copy" / "checkpoint").read_bytes()
        report = verify_log(tmp_path / "later", [signer.verifier], trusted=[old])
        assert report.extends == (5,)

        # The naive copy, had the writer signed that checkpoint between its copies, is
        # refused: the checkpoint covers an entry the copied entry file does not have.
        shutil.copyfile(tmp_path / "log" / "checkpoint", naive / "checkpoint")
        with pytest.raises(VerificationError):
            verify_log(naive, [signer.verifier])
    finally:
        log.close()


def test_a_snapshot_refuses_a_used_directory_and_an_incomplete_log(tmp_path: Path) -> None:
    log, _ = _live_log(tmp_path / "log")
    log.close()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(StorageError, match="not empty"):
        snapshot(tmp_path / "log", tmp_path / "busy")
    assert (tmp_path / "busy" / "x").read_text() == "keep me"
    # Entries lost from the end of the file: the checkpoint covers more than there is.
    entries = tmp_path / "log" / "entries.wal"
    entries.write_bytes(entries.read_bytes()[:100])
    with pytest.raises(StorageError):
        snapshot(tmp_path / "log", tmp_path / "copy")


def test_the_cli_takes_a_snapshot(tmp_path: Path) -> None:
    log, signer = _live_log(tmp_path / "log")
    try:
        result = CliRunner().invoke(
            app, ["audit", "snapshot", "--log", str(tmp_path / "log"), "--to", str(tmp_path / "c")]
        )
        assert result.exit_code == 0, result.output
        assert "ok: 5 entries" in result.output
        assert verify_log(tmp_path / "c", [signer.verifier]).entries == 5
    finally:
        log.close()
