"""`verify` on a log a crash left behind, before any writer reopened it.

A writer appends a batch by writing its records to the entry file and syncing it, then
appending the stored hashes and offsets; it signs a checkpoint later. A kill -9 can
therefore leave, after the last checkpoint, a record cut at any byte, or entries whose
hashes or offsets are missing or cut short. Each such state is built exactly (no random
kills): it must verify with an *unsigned tail* reported, never as tampering; the same
damage inside the signed prefix must still fail; and the writer repairs it on open.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from audit.errors import VerificationError
from audit.log import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENTRIES_FILE,
    HASHES_FILE,
    OFFSETS_FILE,
    VKEY_FILE,
    AuditLog,
)
from audit.merkle import HASH_SIZE, stored_hash_count
from audit.note import Signer
from audit.verify import verify_log
from sandbox.cli.audit import app as audit_app

from .helpers import ORIGIN, event

SIGNED = 12
"""Entries in the last signed checkpoint of the crashed log."""
DURABLE = 15
"""Entries in the entry file (three after the checkpoint)."""


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Signer]:
    """The files of a writer killed with 3 entries durable but not yet checkpointed."""
    base = tmp_path_factory.mktemp("crashed")
    signer = Signer.generate(ORIGIN)
    log = AuditLog.create(base / "live", ORIGIN, signer, checkpoint_interval=3600)
    try:
        log.append_batch([event(i) for i in range(SIGNED)])
        log.publish_checkpoint()
        for i in range(SIGNED, DURABLE):
            log.append(event(i))
        image = base / "image"
        image.mkdir()
        for name in (CONFIG_FILE, VKEY_FILE, CHECKPOINT_FILE, ENTRIES_FILE, HASHES_FILE):
            shutil.copyfile(base / "live" / name, image / name)
        shutil.copyfile(base / "live" / OFFSETS_FILE, image / OFFSETS_FILE)
    finally:
        log.close()
    return image, signer


def _copy(image: Path, to: Path) -> Path:
    shutil.copytree(image, to)
    return to


def _offsets(path: Path) -> list[int]:
    data = (path / OFFSETS_FILE).read_bytes()
    return [int.from_bytes(data[i : i + 8], "big") for i in range(0, len(data), 8)]


def _truncate(path: Path, name: str, size: int) -> None:
    with (path / name).open("r+b") as f:
        f.truncate(size)


def test_the_crash_image_verifies_with_its_three_unpublished_entries(
    crashed: tuple[Path, Signer], tmp_path: Path
) -> None:
    path = _copy(crashed[0], tmp_path / "log")
    report = verify_log(path, [crashed[1].verifier])
    assert (report.entries, report.checkpoint.size, report.tail) == (DURABLE, SIGNED, None)


def test_a_record_cut_at_any_byte_after_the_checkpoint_is_an_unsigned_tail(
    crashed: tuple[Path, Signer], tmp_path: Path
) -> None:
    image, signer = crashed
    offsets = _offsets(image)
    end = (image / ENTRIES_FILE).stat().st_size
    path = _copy(image, tmp_path / "log")
    wal = (image / ENTRIES_FILE).read_bytes()
    bounds = [*offsets, end]  # where each record starts, then the end of the file
    for cut in range(offsets[DURABLE - 2], end):  # every byte of the last two records
        (path / ENTRIES_FILE).write_bytes(wal[:cut])
        report = verify_log(path, [signer.verifier])
        whole = max(i for i, start in enumerate(bounds) if start <= cut)
        assert report.entries == whole, cut
        assert report.checkpoint.size == SIGNED
        assert report.tail is not None, cut
        assert report.tail.index == whole
        assert report.tail.bytes == cut - bounds[whole]
        assert report.tail.records == 0
        assert "unsigned tail" in str(report.tail)


def test_hashes_or_offsets_cut_at_any_byte_after_the_checkpoint_are_an_unsigned_tail(
    crashed: tuple[Path, Signer], tmp_path: Path
) -> None:
    image, signer = crashed
    path = _copy(image, tmp_path / "log")
    for name, start in (
        (OFFSETS_FILE, 8 * SIGNED),
        (HASHES_FILE, stored_hash_count(SIGNED) * HASH_SIZE),
    ):
        whole = (image / name).read_bytes()
        for cut in range(start, len(whole)):
            (path / name).write_bytes(whole[:cut])
            report = verify_log(path, [signer.verifier])
            assert SIGNED <= report.entries < DURABLE, (name, cut)
            assert report.tail is not None
            assert f"{name} ends early" in report.tail.reason
            assert report.tail.records == DURABLE - report.entries
        (path / name).write_bytes(whole)


def test_hashes_or_offsets_longer_than_the_entries_are_an_unsigned_tail(
    crashed: tuple[Path, Signer], tmp_path: Path
) -> None:
    """The entry file cut at a record boundary past the checkpoint: derived data outlives it."""
    image, signer = crashed
    path = _copy(image, tmp_path / "log")
    offsets = _offsets(image)
    for keep in reversed(range(SIGNED, DURABLE)):
        _truncate(path, ENTRIES_FILE, offsets[keep])
        report = verify_log(path, [signer.verifier])
        assert report.entries == keep
        assert report.tail is not None
        assert "hold data for entries the entry file does not have" in report.tail.reason
    for name in (OFFSETS_FILE, HASHES_FILE):
        fresh = _copy(image, tmp_path / f"extra-{name}")
        with (fresh / name).open("ab") as f:
            f.write(b"\x00" * 5)
        report = verify_log(fresh, [signer.verifier])
        assert report.entries == DURABLE
        assert report.tail is not None


def test_the_same_damage_inside_the_signed_prefix_is_still_tampering(
    crashed: tuple[Path, Signer], tmp_path: Path
) -> None:
    image, signer = crashed
    offsets = _offsets(image)
    cases: list[tuple[str, int]] = [
        (ENTRIES_FILE, offsets[SIGNED - 1] + 3),  # the last signed record cut short
        (ENTRIES_FILE, offsets[SIGNED - 1]),  # the last signed record removed
        (OFFSETS_FILE, 8 * (SIGNED - 1) + 4),
        (HASHES_FILE, stored_hash_count(SIGNED - 1) * HASH_SIZE + 7),
    ]
    for n, (name, cut) in enumerate(cases):
        path = _copy(image, tmp_path / f"case-{n}")
        _truncate(path, name, cut)
        with pytest.raises(VerificationError):
            verify_log(path, [signer.verifier])
    # A byte changed inside a signed record, and a full-length wrong offset past it.
    path = _copy(image, tmp_path / "flip")
    wal = bytearray((path / ENTRIES_FILE).read_bytes())
    wal[offsets[SIGNED // 2] + 20] ^= 1
    (path / ENTRIES_FILE).write_bytes(bytes(wal))
    with pytest.raises(VerificationError):
        verify_log(path, [signer.verifier])
    path = _copy(image, tmp_path / "moved")
    data = bytearray((path / OFFSETS_FILE).read_bytes())
    data[8 * (DURABLE - 1) + 7] ^= 1  # complete but wrong: not what a crash leaves
    (path / OFFSETS_FILE).write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="does not match the entry file"):
        verify_log(path, [signer.verifier])


def test_the_writer_repairs_the_tail_and_verify_is_then_clean(
    crashed: tuple[Path, Signer], tmp_path: Path
) -> None:
    image, signer = crashed
    offsets = _offsets(image)
    for n, (name, cut) in enumerate(
        [(ENTRIES_FILE, offsets[DURABLE - 1] + 5), (OFFSETS_FILE, 8 * (SIGNED + 1) + 3)]
    ):
        path = _copy(image, tmp_path / f"repair-{n}")
        _truncate(path, name, cut)
        assert verify_log(path, [signer.verifier]).tail is not None
        with AuditLog(path, signer) as log:
            size = log.size
        report = verify_log(path, [signer.verifier])
        assert report.tail is None
        assert report.entries == report.checkpoint.size == size >= SIGNED


def test_sandboxctl_verify_reports_the_tail_and_exits_0(
    crashed: tuple[Path, Signer], tmp_path: Path
) -> None:
    image, signer = crashed
    path = _copy(image, tmp_path / "log")
    _truncate(path, ENTRIES_FILE, _offsets(image)[DURABLE - 1] + 9)
    runner = CliRunner()
    app: typer.Typer = audit_app
    result = runner.invoke(app, ["verify", "--log", str(path), "--vkey", signer.verifier.vkey])
    assert result.exit_code == 0, result.output
    assert "unsigned tail of" in result.output
    assert "tamper" not in result.output
    assert f"ok: {DURABLE - 1} entries verified; checkpoint {SIGNED}" in result.output
    _truncate(path, ENTRIES_FILE, _offsets(image)[SIGNED - 1] + 9)
    result = runner.invoke(app, ["verify", "--log", str(path), "--vkey", signer.verifier.vkey])
    assert result.exit_code == 3
