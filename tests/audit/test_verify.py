"""Offline verification: every change to a log directory is caught, naming the entry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from audit.columns import OffsetColumn
from audit.errors import VerificationError
from audit.log import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENTRIES_FILE,
    HASHES_FILE,
    OFFSETS_FILE,
    VKEY_FILE,
    AuditLog,
    LogReader,
)
from audit.merkle import MemoryHashStore, leaf_hash, stored_hash_index
from audit.note import Signer
from audit.verify import verify_log
from audit.wal import MAGIC, encode_record

from .helpers import event, make_log


@pytest.fixture(scope="module")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Signer]:
    path = tmp_path_factory.mktemp("verify") / "log"
    signer, _ = make_log(path, 6, batch=4)
    return path, signer


def test_an_intact_log_verifies(small_log: tuple[Path, Signer]) -> None:
    path, signer = small_log
    report = verify_log(path, [signer.verifier], deep=True)
    assert report.entries == 6
    assert report.checkpoint.size == 6
    assert report.verified_by == (signer.verifier.vkey,)
    assert verify_log(path).entries == 6  # with the directory's own log.vkey


def _entry_of_offset(path: Path, offset: int) -> int:
    with LogReader(path) as reader:
        index = 0
        while index + 1 < reader.size and reader._offsets.offset(index + 1) <= offset:
            index += 1
    return index


def _entry_of_stored_hash(position: int, size: int) -> int:
    for level in range(size.bit_length()):
        for n in range(size >> level):
            if stored_hash_index(level, n) == position:
                return ((n + 1) << level) - 1  # the leaf that completes the subtree
    raise AssertionError(position)


def test_any_changed_byte_is_detected_naming_the_entry(
    small_log: tuple[Path, Signer], tmp_path: Path
) -> None:
    source, signer = small_log
    work = tmp_path / "copy"
    shutil.copytree(source, work)
    checked = 0
    for name in sorted(p.name for p in source.iterdir()):
        original = (source / name).read_bytes()
        for i in range(len(original)):
            bad = bytearray(original)
            bad[i] ^= 0x01
            (work / name).write_bytes(bytes(bad))
            with pytest.raises(VerificationError) as caught:
                verify_log(work, [signer.verifier])
            if name == ENTRIES_FILE and i >= len(MAGIC):
                assert caught.value.index == _entry_of_offset(source, i), (name, i)
            elif name == HASHES_FILE:
                assert caught.value.index == _entry_of_stored_hash(i // 32, 6), (name, i)
            elif name == OFFSETS_FILE:
                assert caught.value.index == i // 8, (name, i)
            checked += 1
        (work / name).write_bytes(original)
    assert checked > 3000
    verify_log(work, [signer.verifier])


def test_wrong_key_fails(small_log: tuple[Path, Signer]) -> None:
    path, _ = small_log
    other = Signer.generate(Signer.generate("audit.regsandbox.test/log").name)
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        verify_log(path, [other.verifier])


def _rewrite(path: Path, entries: list[bytes]) -> None:
    """Rewrite entries, hashes and offsets consistently, as a careful forger would."""
    store = MemoryHashStore(leaf_hash(e) for e in entries)
    offsets, pos, wal = [], len(MAGIC), bytearray(MAGIC)
    for e in entries:
        offsets.append(pos)
        record = encode_record(e)
        wal += record
        pos += len(record)
    (path / ENTRIES_FILE).write_bytes(bytes(wal))
    (path / HASHES_FILE).write_bytes(b"".join(store.hashes))
    (path / OFFSETS_FILE).write_bytes(OffsetColumn.pack(offsets))


@pytest.mark.parametrize(
    ("change", "index"),
    [
        ("remove", 2),
        ("insert", 2),
        ("reorder", 1),
        ("truncate", 4),
    ],
)
def test_removed_inserted_reordered_or_truncated_entries_fail(
    small_log: tuple[Path, Signer], tmp_path: Path, change: str, index: int
) -> None:
    source, signer = small_log
    work = tmp_path / "log"
    shutil.copytree(source, work)
    with LogReader(source) as reader:
        entries = [data for _, data in reader.iter_entries()]
    if change == "remove":
        del entries[2]
    elif change == "insert":
        entries.insert(2, entries[4])
    elif change == "reorder":
        entries[1], entries[3] = entries[3], entries[1]
    else:
        entries = entries[:4]
    _rewrite(work, entries)
    with pytest.raises(VerificationError) as caught:
        verify_log(work, [signer.verifier])
    assert caught.value.index == index


def test_rollback_is_detected_against_a_saved_checkpoint(tmp_path: Path) -> None:
    signer, _ = make_log(tmp_path / "log", 10)
    saved = (tmp_path / "log" / CHECKPOINT_FILE).read_bytes()
    backup = tmp_path / "backup"
    shutil.copytree(tmp_path / "log", backup)
    with AuditLog(tmp_path / "log", signer) as log:
        log.append_batch([event(i) for i in range(10, 15)])
    newer = (tmp_path / "log" / CHECKPOINT_FILE).read_bytes()
    assert verify_log(tmp_path / "log", [signer.verifier], trusted=[saved]).extends == (10,)
    # Roll the whole directory back to the older state: self-consistent, but not what
    # a reviewer saw.
    with pytest.raises(VerificationError, match="truncation or rollback") as caught:
        verify_log(backup, [signer.verifier], trusted=[newer])
    assert caught.value.index == 10


def test_a_fork_is_detected_against_a_saved_checkpoint(tmp_path: Path) -> None:
    signer, _ = make_log(tmp_path / "a", 8)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    with AuditLog(tmp_path / "a", signer) as log:
        log.append_batch([event(100 + i) for i in range(4)])
    with AuditLog(tmp_path / "b", signer) as log:
        log.append_batch([event(200 + i) for i in range(4)])
    fork = (tmp_path / "b" / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(VerificationError, match="fork"):
        verify_log(tmp_path / "a", [signer.verifier], trusted=[fork])


def test_damaged_metadata_is_reported(small_log: tuple[Path, Signer], tmp_path: Path) -> None:
    source, _signer = small_log
    for name in (CONFIG_FILE, VKEY_FILE, CHECKPOINT_FILE):
        work = tmp_path / name
        shutil.copytree(source, work)
        (work / name).unlink()
        with pytest.raises(VerificationError):
            verify_log(work)
