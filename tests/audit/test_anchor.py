"""The checkpoint anchor: the log never signs a checkpoint inconsistent with one it signed.

c2sp.org/tlog-checkpoint: "a log must never sign a checkpoint inconsistent with one it
signed before". The attacker below can write the log's volume but not read its key: it
puts back an older signed checkpoint (every receipt carries one), rewrites the entries
after it with CRCs and hashes recomputed, and waits for the writer's next start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from audit.anchor import ABSENT, FileCheckpointAnchor
from audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from audit.errors import AnchorConflictError, AnchorMismatchError, StorageError
from audit.log import CHECKPOINT_FILE, ENTRIES_FILE, HASHES_FILE, OFFSETS_FILE, AuditLog
from audit.merkle import EMPTY_ROOT
from audit.note import Note, Signer
from audit.proof import TlogProof
from audit.verify import verify_log

from .helpers import ORIGIN, event, forge_after


def _root_of(note: bytes) -> Checkpoint:
    return Checkpoint.from_text(Note.parse(note).text)


def _history(path: Path, anchor: FileCheckpointAnchor | None) -> tuple[Signer, bytes, bytes]:
    """A log of 20 entries; return its key, a receipt's checkpoint (10) and the last (20)."""
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(path, ORIGIN, signer, anchor=anchor) as log:
        log.append_batch([event(i) for i in range(10)])
        log.publish_checkpoint()
        receipt = log.receipt(3).to_bytes()
        log.append_batch([event(i) for i in range(10, 20)])
        last = log.publish_checkpoint()
    old = TlogProof.parse(receipt).checkpoint
    assert _root_of(old).size == 10
    return signer, old, last


def test_without_an_anchor_the_keyless_rewrite_gets_signed(tmp_path: Path) -> None:
    """The attack the anchor exists for: without one, the writer signs the forgery."""
    log_dir = tmp_path / "log"
    signer, old, last = _history(log_dir, None)
    forge_after(log_dir, 10, old)
    verify_log(log_dir, [signer.verifier])  # `verify --vkey` passes on the forged copy
    with AuditLog(log_dir, signer) as log:
        signed = _root_of(log.checkpoint_note)
    assert signed.size == 20
    assert signed.root != _root_of(last).root  # a second, forged history of size 20


def test_with_an_anchor_the_writer_refuses_the_rewrite_and_signs_nothing(
    tmp_path: Path,
) -> None:
    log_dir = tmp_path / "log"
    anchor = FileCheckpointAnchor(tmp_path / "anchor-volume" / "checkpoint")
    signer, old, last = _history(log_dir, anchor)
    assert anchor.load().note == last
    forge_after(log_dir, 10, old)
    with pytest.raises(AnchorMismatchError) as info:
        AuditLog(log_dir, signer, anchor=anchor)
    assert info.value.reason == "CheckpointAnchorMismatch"
    assert "first 20 entries do not hash" in str(info.value)
    assert (log_dir / CHECKPOINT_FILE).read_bytes() == old  # nothing new was signed
    assert anchor.load().note == last


def test_a_rollback_below_the_anchored_size_is_refused(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    anchor = FileCheckpointAnchor(tmp_path / "anchor" / "checkpoint")
    signer, _, _ = _history(log_dir, anchor)
    # Roll the volume back to a log of 10 entries with its own signed checkpoint.
    fresh = tmp_path / "fresh"
    with AuditLog.create(fresh, ORIGIN, signer) as log:
        log.append_batch([event(i) for i in range(10)])
    for name in (ENTRIES_FILE, HASHES_FILE, OFFSETS_FILE):
        (log_dir / name).write_bytes((fresh / name).read_bytes())
    (log_dir / CHECKPOINT_FILE).write_bytes((fresh / CHECKPOINT_FILE).read_bytes())
    with pytest.raises(AnchorMismatchError) as info:
        AuditLog(log_dir, signer, anchor=anchor)
    assert info.value.reason == "LogRolledBack"
    assert "holds 10 entries but it signed a checkpoint of 20" in str(info.value)


def test_an_anchor_not_signed_by_the_log_is_refused(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    anchor = FileCheckpointAnchor(tmp_path / "anchor" / "checkpoint")
    signer, _, _ = _history(log_dir, anchor)
    other = Signer.generate(ORIGIN)
    bogus = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), [other])
    anchor.swap(anchor.load().version, bogus)
    with pytest.raises(AnchorMismatchError) as info:
        AuditLog(log_dir, signer, anchor=anchor)
    assert info.value.reason == "CheckpointAnchorUnverifiable"


def test_the_anchor_follows_every_signed_checkpoint(tmp_path: Path) -> None:
    anchor = FileCheckpointAnchor(tmp_path / "anchor" / "checkpoint")
    signer = Signer.generate(ORIGIN)
    assert anchor.load().version == ABSENT
    with AuditLog.create(tmp_path / "log", ORIGIN, signer, anchor=anchor) as log:
        assert anchor.load().note == log.checkpoint_note  # started at size 0
        for n in range(3):
            log.append(event(n))
            note = log.publish_checkpoint()
            assert anchor.load().note == note
            assert open_checkpoint(note, [signer.verifier]).size == n + 1
    # Reopening a consistent log with its anchor works and keeps appending.
    with AuditLog(tmp_path / "log", signer, anchor=anchor) as log:
        log.append(event(9))
        assert _root_of(log.publish_checkpoint()).size == 4
    assert _root_of(anchor.load().note or b"").size == 4


def test_an_anchor_lagging_the_log_catches_up_on_open(tmp_path: Path) -> None:
    """A crash between signing and anchoring leaves the anchor behind: not an attack."""
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer) as log:
        log.append_batch([event(i) for i in range(5)])
        early = log.publish_checkpoint()
        log.append_batch([event(i) for i in range(5, 8)])
    anchor = FileCheckpointAnchor(tmp_path / "anchor" / "checkpoint")
    anchor.swap(ABSENT, early)
    with AuditLog(tmp_path / "log", signer, anchor=anchor) as log:
        assert log.anchored_checkpoint is not None
        assert log.anchored_checkpoint.size == 8
    assert _root_of(anchor.load().note or b"").size == 8


def test_a_second_writer_moving_the_anchor_stops_the_first(tmp_path: Path) -> None:
    anchor = FileCheckpointAnchor(tmp_path / "anchor" / "checkpoint")
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer, anchor=anchor) as log:
        log.append(event(1))
        log.publish_checkpoint()
        (tmp_path / "anchor" / "checkpoint").write_bytes(log.checkpoint_note + b"\n")
        log.append(event(2))
        with pytest.raises(AnchorConflictError):
            log.publish_checkpoint()
        with pytest.raises(StorageError, match="stopped accepting appends"):
            log.append(event(3))


def test_file_anchor_compare_and_swap(tmp_path: Path) -> None:
    anchor = FileCheckpointAnchor(tmp_path / "a" / "checkpoint")
    first = anchor.swap(ABSENT, b"one\n")
    with pytest.raises(AnchorConflictError):
        anchor.swap(ABSENT, b"two\n")
    second = anchor.swap(first.version, b"two\n")
    assert anchor.load() == second
    with pytest.raises(AnchorConflictError):
        anchor.swap(first.version, b"three\n")
