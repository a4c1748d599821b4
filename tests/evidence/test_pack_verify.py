"""Pack and verify round trip, and every kind of tampering a supervisor must catch."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from audit.note import Note, Verifier, sign_note
from audit.signing import load_verifier
from sandbox.evidence.catalog import load_controls
from sandbox.evidence.collect import Scope, collect
from sandbox.evidence.pack import (
    ENTRIES,
    MANIFEST,
    RECEIPTS,
    entry_file,
    manifest_text,
    receipt_file,
    write_pack,
)
from sandbox.evidence.receipts import BatchReceipt, standalone
from sandbox.evidence.verify import PackReport, verify_pack
from tests.evidence.conftest import Packed, make_pack
from tests.evidence.history import History, compliant


def _verify(packed: Packed) -> PackReport:
    keys = [load_verifier(Path(v)) for v in packed.vkeys]
    return verify_pack(packed.pack, keys)


def _items(report: PackReport) -> list[str]:
    return [p.item for p in report.problems]


def _entries(pack: Path) -> list[tuple[int, bytes]]:
    """(index, line) of every entry in the pack's entries.ndjson."""
    lines = (pack / ENTRIES).read_bytes().split(b"\n")[:-1]
    return [(json.loads(line)["index"], line) for line in lines]


def _write_entries(pack: Path, entries: list[tuple[int, bytes]]) -> None:
    (pack / ENTRIES).write_bytes(b"".join(line + b"\n" for _, line in entries))


def _swap_leaf(pack: Path, index: int, leaf: bytes) -> None:
    """Put ``leaf`` as the hash the receipt lists for entry ``index``."""
    old = BatchReceipt.parse((pack / RECEIPTS).read_bytes())
    leaves = tuple(leaf if i == index else h for i, h in zip(old.indices, old.leaves, strict=True))
    new = BatchReceipt(old.indices, leaves, old.nodes, old.checkpoint)
    (pack / RECEIPTS).write_bytes(new.to_bytes())


def test_round_trip_every_control_satisfied(packed: Packed) -> None:
    report = _verify(packed)
    assert report.ok, report.problems
    assert report.receipts == len(_entries(packed.pack)) > 0
    statuses = {f.control: f.status for f in report.findings}
    assert set(statuses) == {c.id for c in load_controls()}
    assert set(statuses.values()) == {"satisfied"}, statuses


def test_every_receipt_leads_to_the_one_checkpoint(packed: Packed) -> None:
    """The batch receipt, and the C2SP tlog-proof derived from it for each entry, lead to
    the pack's checkpoint, and each such proof verifies with the log's key alone."""
    from audit.proof import verify_tlog_proof

    checkpoint = (packed.pack / "checkpoint").read_bytes()
    data = (packed.pack / RECEIPTS).read_bytes()
    assert data.endswith(b"\n\n" + checkpoint)
    entries = dict(_entries(packed.pack))
    from audit.checkpoint import Checkpoint

    size = Checkpoint.from_text(Note.parse(checkpoint).text).size
    proofs = standalone(BatchReceipt.parse(data), size)
    assert proofs.keys() == entries.keys()
    log_key = load_verifier(packed.log.vkey)
    for index, proof in proofs.items():
        assert proof.endswith(b"\n\n" + checkpoint)
        verify_tlog_proof(proof, entries[index], [log_key])


@pytest.mark.parametrize(
    "victim",
    [
        "entry",
        "receipt",
        "evidence.json",
        "assessment-results.json",
        "report.html",
        "pack.json",
        "checkpoint",
        "catalog.json",
    ],
)
def test_tampering_with_a_file_names_it(packed: Packed, victim: str) -> None:
    entries = _entries(packed.pack)
    first = entries[0][0]
    if victim == "entry":  # a bit of the first entry, inside entries.ndjson
        line = bytearray(entries[0][1])
        line[len(line) // 2] ^= 0x01
        _write_entries(packed.pack, [(first, bytes(line)), *entries[1:]])
        path, file = entry_file(first), ENTRIES
    elif victim == "receipt":  # a bit of the first entry's leaf hash in the receipt
        leaf = bytearray(BatchReceipt.parse((packed.pack / RECEIPTS).read_bytes()).leaves[0])
        leaf[len(leaf) // 2] ^= 0x01
        _swap_leaf(packed.pack, first, bytes(leaf))
        path, file = receipt_file(first), RECEIPTS
    else:
        target = packed.pack / victim
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
        path = file = victim
    report = _verify(packed)
    assert not report.ok
    assert path in _items(report), report.problems
    assert file in _items(report), report.problems


def test_dropping_an_entry_names_it(packed: Packed) -> None:
    entries = _entries(packed.pack)
    victim = entries[3][0]
    _write_entries(packed.pack, entries[:3] + entries[4:])
    report = _verify(packed)
    assert entry_file(victim) in _items(report), report.problems


def test_dropping_an_entry_with_its_receipt_line_fails(packed: Packed) -> None:
    """A signer who drops an entry and its leaf line, and signs again, is caught: the
    receipt no longer leads to the checkpoint."""
    entries = _entries(packed.pack)
    _write_entries(packed.pack, entries[:3] + entries[4:])
    old = BatchReceipt.parse((packed.pack / RECEIPTS).read_bytes())
    keep = [k for k in range(len(old.indices)) if k != 3]
    new = BatchReceipt(
        tuple(old.indices[k] for k in keep),
        tuple(old.leaves[k] for k in keep),
        old.nodes,
        old.checkpoint,
    )
    (packed.pack / RECEIPTS).write_bytes(new.to_bytes())
    _resign(packed)
    report = _verify(packed)
    assert _items(report)[0] == RECEIPTS, report.problems


def test_an_added_file_is_named(packed: Packed) -> None:
    (packed.pack / "entries").mkdir()
    (packed.pack / "entries" / "999999999999.json").write_bytes(b"{}")
    report = _verify(packed)
    assert "entries/999999999999.json" in _items(report)


def test_an_added_entry_line_is_named(packed: Packed) -> None:
    entries = _entries(packed.pack)
    doc = json.loads(entries[-1][1])
    doc["index"] = 999_999_999_999
    extra = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    _write_entries(packed.pack, [*entries, (999_999_999_999, extra)])
    _resign(packed)
    report = _verify(packed)
    assert entry_file(999_999_999_999) in _items(report), report.problems


def test_a_receipt_from_another_log_is_named(tmp_path: Path, packed: Packed) -> None:
    """Same entry bytes and index in another log: its receipt leads to another checkpoint."""
    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    other = make_pack(tmp_path, history, Scope("bank-a"), name="other")
    theirs = BatchReceipt.parse((other.pack / RECEIPTS).read_bytes())
    ours = BatchReceipt.parse((packed.pack / RECEIPTS).read_bytes())
    index = sorted(set(theirs.indices) & set(ours.indices))[0]
    _swap_leaf(packed.pack, index, theirs.leaves[theirs.indices.index(index)])
    report = _verify(packed)
    assert receipt_file(index) in _items(report), report.problems


def test_the_receipt_of_another_log_is_named(tmp_path: Path, packed: Packed) -> None:
    """The whole receipt of another log's pack leads to another checkpoint."""
    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    other = make_pack(tmp_path, history, Scope("bank-a"), name="other")
    (packed.pack / RECEIPTS).write_bytes((other.pack / RECEIPTS).read_bytes())
    report = _verify(packed)
    assert RECEIPTS in _items(report), report.problems


def test_resigned_manifest_over_a_swapped_receipt_still_fails(packed: Packed) -> None:
    """Even the pack's own signer cannot swap in a receipt that does not prove the entry."""
    receipt = BatchReceipt.parse((packed.pack / RECEIPTS).read_bytes())
    _swap_leaf(packed.pack, receipt.indices[0], receipt.leaves[1])
    _resign(packed)
    report = _verify(packed)
    assert receipt_file(receipt.indices[0]) in _items(report), report.problems


def _resign(packed: Packed) -> None:
    """Act as the pack's signer: recompute every digest and sign the manifest again."""
    pack_id = Note.parse((packed.pack / MANIFEST).read_bytes()).text.split("\n")[1]
    digests = {
        p.relative_to(packed.pack).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in packed.pack.rglob("*")
        if p.is_file() and p.name != MANIFEST
    }
    (packed.pack / MANIFEST).write_bytes(
        sign_note(manifest_text(pack_id, digests), [packed.officer])
    )


def test_a_claim_the_evidence_does_not_support_fails(tmp_path: Path) -> None:
    """A signer who writes "satisfied" over evidence that breaks the control is caught."""
    history = History()
    key = history.provision("bank-a", "fraud", "card-claims")
    history.expire("bank-a", "fraud", "card-claims", None)  # key never destroyed
    del key
    packed = make_pack(tmp_path, history, Scope("bank-a"))
    evidence_path = packed.pack / "evidence.json"
    evidence = json.loads(evidence_path.read_bytes())
    for finding in evidence["findings"]:
        if finding["control"] == "aia-59-1-g":
            assert finding["status"] == "not-satisfied"
            finding.update(status="satisfied", reason="every key destroyed", violations=[])
    evidence_path.write_text(json.dumps(evidence, indent=1, sort_keys=True) + "\n")
    _resign(packed)
    report = _verify(packed)
    assert "finding aia-59-1-g" in _items(report), report.problems
    assert "evidence.json" in _items(report)


def test_an_untrusted_signer_is_refused(packed: Packed) -> None:
    stranger = Verifier.from_vkey(load_verifier(packed.log.vkey).vkey)  # only the log's key
    report = verify_pack(packed.pack, [stranger])
    assert _items(report) == [MANIFEST]


def test_the_log_key_must_be_trusted_too(packed: Packed) -> None:
    report = verify_pack(packed.pack, [packed.officer.verifier])
    assert _items(report) == ["checkpoint"]


def test_a_pack_is_never_written_over_another(packed: Packed) -> None:
    before = {p: p.read_bytes() for p in packed.pack.rglob("*") if p.is_file()}
    found = collect(packed.log.path, Scope("bank-a"))
    with pytest.raises(FileExistsError):
        write_pack(found, packed.pack, packed.officer)
    assert {p: p.read_bytes() for p in packed.pack.rglob("*") if p.is_file()} == before


def test_witness_cosignatures_travel_with_the_pack(tmp_path: Path) -> None:
    """When the log keeps a cosigned copy of its checkpoint, the pack carries it, and
    verify can require the witness."""
    import time

    from audit.checkpoint import Checkpoint
    from audit.log import LogReader
    from audit.witness import Cosigner
    from audit.witnessing import COSIGNED_FILE

    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    packed = make_pack(tmp_path, history, Scope("bank-a"), name="plain")
    witness = Cosigner.generate("witness.example/w1")
    with LogReader(packed.log.path) as reader:
        note = Note.parse(reader.checkpoint_note)
        cosig = witness.cosign(Checkpoint.from_text(note.text), int(time.time()))
    cosigned = Note(note.text, (*note.signatures, cosig)).to_bytes()
    (packed.log.path / COSIGNED_FILE).write_bytes(cosigned)
    out = tmp_path / "witnessed"
    write_pack(collect(packed.log.path, Scope("bank-a")), out, packed.officer)
    assert (out / "checkpoint").read_bytes() == cosigned
    keys = [load_verifier(Path(v)) for v in packed.vkeys]
    report = verify_pack(out, keys, witnesses=[witness.verifier], quorum=1)
    assert report.ok, report.problems
    assert report.witnesses == ("witness.example/w1",)
    integrity = next(f for f in report.findings if f.control == "aia-59-1-h")
    assert "cosigned by witness.example/w1" in integrity.reason
    other = Cosigner.generate("witness.example/w2")
    report = verify_pack(out, keys, witnesses=[other.verifier], quorum=1)
    assert _items(report) == ["checkpoint"]


def test_a_link_in_place_of_a_file_is_named(packed: Packed, tmp_path: Path) -> None:
    """Links are not followed: a pack is checked as the files it holds."""
    victim = packed.pack / ENTRIES
    outside = tmp_path / "outside.ndjson"
    outside.write_bytes(victim.read_bytes())
    victim.unlink()
    victim.symlink_to(outside)
    report = _verify(packed)
    assert ENTRIES in _items(report), report.problems
