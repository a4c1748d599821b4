"""The log directory: appends, durability, recovery, checkpoints, keys, one writer."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from audit.checkpoint import open_checkpoint
from audit.entry import MAX_ENTRY_BYTES
from audit.errors import EntryTooLargeError, LogLockedError, MalformedError, StorageError
from audit.log import CHECKPOINT_FILE, ENTRIES_FILE, AuditLog, LogReader
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.note import Signer, open_note
from audit.proof import verify_tlog_proof
from audit.verify import verify_log

from .helpers import ORIGIN, event, make_log


def test_append_returns_indices_and_entries_read_back(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer) as log:
        assert log.append_batch([event(0), event(1)]) == [0, 1]
        assert log.append(event(2)) == 2
        assert log.size == 3
        assert log.entry(1).resource.name == "claims-1"
        assert log.entry(2).index == 2
    with LogReader(tmp_path / "log") as reader:
        assert reader.size == 3
        assert [i for i, _ in reader.iter_entries()] == [0, 1, 2]
        assert reader.entry_bytes(0) == reader.entry(0).to_bytes()


def test_create_refuses_an_existing_log_and_a_wrongly_named_key(tmp_path: Path) -> None:
    make_log(tmp_path / "log", 1)
    with pytest.raises(StorageError, match="already holds an audit log"):
        AuditLog.create(tmp_path / "log", ORIGIN, Signer.generate(ORIGIN))
    with pytest.raises(MalformedError, match="named after the origin"):
        AuditLog.create(tmp_path / "other", ORIGIN, Signer.generate("other.example"))


def test_a_second_writer_is_refused_clearly(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer):
        with pytest.raises(LogLockedError, match="already open for writing"):
            AuditLog(tmp_path / "log", signer)
        LogReader(tmp_path / "log").close()  # readers are fine


def test_the_wrong_key_cannot_open_the_log_for_writing(tmp_path: Path) -> None:
    make_log(tmp_path / "log", 3)
    with pytest.raises(StorageError, match="does not verify"):
        AuditLog(tmp_path / "log", Signer.generate(ORIGIN))


def test_an_oversized_entry_in_a_batch_changes_nothing(tmp_path: Path) -> None:
    signer, _ = make_log(tmp_path / "log", 5)
    before = (tmp_path / "log" / ENTRIES_FILE).read_bytes()
    with AuditLog(tmp_path / "log", signer) as log:
        big = event(9).model_copy(update={"details": {"blob": "x" * MAX_ENTRY_BYTES}})
        with pytest.raises(EntryTooLargeError):
            log.append_batch([event(5), big])
        assert log.size == 5
        assert log.append(event(5)) == 5
    after = (tmp_path / "log" / ENTRIES_FILE).read_bytes()
    assert after.startswith(before)


def test_checkpoints_are_signed_consistent_and_prove_inclusion(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer) as log:
        log.append_batch([event(i) for i in range(7)])
        first = open_checkpoint(log.publish_checkpoint(), [signer.verifier], origin=ORIGIN)
        log.append_batch([event(i) for i in range(7, 30)])
        second = open_checkpoint(log.publish_checkpoint(), [signer.verifier], origin=ORIGIN)
        assert (first.size, second.size) == (7, 30)
        verify_consistency(7, 30, log.consistency_proof(7), first.root, second.root)
        for i in (0, 6, 29):
            verify_inclusion(
                leaf_hash(log.entry_bytes(i)), i, 30, log.inclusion_proof(i), second.root
            )
        receipt = log.receipt(12).to_bytes()
        verify_tlog_proof(receipt, log.entry_bytes(12), [signer.verifier], origin=ORIGIN)


def test_checkpoint_is_published_in_the_background_within_the_interval(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer, checkpoint_interval=0.2) as log:
        log.append_batch([event(i) for i in range(3)])
        deadline = threading.Event()
        for _ in range(50):
            if LogReader(tmp_path / "log").size == 3:
                break
            deadline.wait(0.05)
        assert LogReader(tmp_path / "log").size == 3


def test_concurrent_appends_share_fsyncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    signer = Signer.generate(ORIGIN)
    calls = 0
    real = os.fdatasync

    def counting(fd: int) -> None:
        nonlocal calls
        calls += 1
        real(fd)

    with AuditLog.create(tmp_path / "log", ORIGIN, signer, checkpoint_interval=60) as log:
        monkeypatch.setattr(os, "fdatasync", counting)
        results: list[list[int]] = []

        def worker(k: int) -> None:
            for j in range(20):
                results.append(log.append_batch([event(k * 100 + j)]))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        monkeypatch.undo()
        indices = sorted(i for r in results for i in r)
        assert indices == list(range(160))
        assert calls < 160  # group commit: fewer fsyncs than appends
    verify_log(tmp_path / "log", [signer.verifier])


def test_torn_tail_is_truncated_and_acknowledged_entries_survive(tmp_path: Path) -> None:
    signer, _ = make_log(tmp_path / "log", 12)
    wal = tmp_path / "log" / ENTRIES_FILE
    with AuditLog(tmp_path / "log", signer, checkpoint_interval=3600) as log:
        log.append_batch([event(i) for i in range(12, 15)])  # durable, not yet checkpointed
        clean = wal.read_bytes()
        with wal.open("ab") as f:
            f.write(clean[-200:-20])  # half a record, as a crash mid-write leaves it
        # Simulate a crash: drop the log without closing (no final checkpoint).
        log._closed = True
        log._release()
    with AuditLog(tmp_path / "log", signer) as log:
        assert log.size == 15
        assert wal.read_bytes() == clean
        assert log.entry(14).resource.name == "claims-14"
        log.append(event(15))
    assert verify_log(tmp_path / "log", [signer.verifier]).entries == 16


def test_damage_before_the_tail_is_refused_not_truncated(tmp_path: Path) -> None:
    signer, _ = make_log(tmp_path / "log", 12)
    wal = tmp_path / "log" / ENTRIES_FILE
    with AuditLog(tmp_path / "log", signer, checkpoint_interval=3600) as log:
        log.append_batch([event(i) for i in range(12, 18)])  # acknowledged, unpublished
        middle = log._offsets.offset(14) + 20
        log._closed = True  # crash
        log._release()
    data = bytearray(wal.read_bytes())
    data[middle] ^= 0xFF
    wal.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="damaged at entry 14"):
        AuditLog(tmp_path / "log", signer)
    assert wal.read_bytes() == bytes(data)  # nothing truncated


def test_lost_entries_are_refused_on_open(tmp_path: Path) -> None:
    signer, _ = make_log(tmp_path / "log", 12)
    wal = tmp_path / "log" / ENTRIES_FILE
    with LogReader(tmp_path / "log") as reader:
        cut = reader._offsets.offset(10)
    os.truncate(wal, cut)
    with pytest.raises(StorageError, match="lost or removed"):
        AuditLog(tmp_path / "log", signer)


def test_derived_files_are_rebuilt_if_missing_data(tmp_path: Path) -> None:
    signer, _ = make_log(tmp_path / "log", 40)
    os.truncate(tmp_path / "log" / "hashes", 64)
    os.truncate(tmp_path / "log" / "offsets", 0)
    with AuditLog(tmp_path / "log", signer) as log:
        assert log.size == 40
        assert log.entry(39).index == 39
    verify_log(tmp_path / "log", [signer.verifier])


def test_key_rotation_co_signs_and_is_logged(tmp_path: Path) -> None:
    old, _ = make_log(tmp_path / "log", 3)
    new = Signer.generate(ORIGIN)
    with AuditLog(tmp_path / "log", old) as log:
        index = log.rotate_key(new)
        rotation = log.entry(index)
        assert rotation.action == "audit.key.rotated"
        assert rotation.details["new_vkey"] == new.verifier.vkey
        note = (tmp_path / "log" / CHECKPOINT_FILE).read_bytes()
        _, verified = open_note(note, [old.verifier, new.verifier])
        assert set(verified) == {old.verifier, new.verifier}
        log.finish_rotation()
        log.append(event(4))
    note = (tmp_path / "log" / CHECKPOINT_FILE).read_bytes()
    _, verified = open_note(note, [old.verifier, new.verifier])
    assert verified == (new.verifier,)
    with AuditLog(tmp_path / "log", [new]) as log:
        assert log.size == 5
    verify_log(tmp_path / "log", [new.verifier])


def test_a_range_reads_exactly_the_entries_one_by_one_reads_and_notices_damage(
    tmp_path: Path,
) -> None:
    make_log(tmp_path / "log", 40)
    with LogReader(tmp_path / "log") as reader:
        one_by_one = [reader.entry_bytes(i) for i in range(40)]
        assert reader.entry_range(0, 40) == one_by_one
        assert reader.entry_range(17, 18) == one_by_one[17:18]
        assert reader.entry_range(39, 39) == []
        with pytest.raises(IndexError):
            reader.entry_range(30, 41)  # past the checkpoint
        middle = reader._offsets.offset(23) + 12
    wal = tmp_path / "log" / ENTRIES_FILE
    data = bytearray(wal.read_bytes())
    data[middle] ^= 0xFF
    wal.write_bytes(bytes(data))
    with LogReader(tmp_path / "log") as reader:
        assert reader.entry_range(0, 23) == one_by_one[:23]
        with pytest.raises(StorageError, match="entry 23 is damaged"):
            reader.entry_range(20, 30)
