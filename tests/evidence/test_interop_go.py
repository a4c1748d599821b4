"""Go's reference code (golang.org/x/mod/sumdb note and tlog) accepts a pack's checkpoint
and the receipt of every one of its entries (the C2SP tlog-proofs derived from the
pack's batch receipt); reuses the audit log's interoperability test."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from audit.checkpoint import Checkpoint
from audit.log import HASHES_FILE, AuditLog, LogReader
from audit.note import Note, Signer, b64encode
from sandbox.evidence.collect import Scope, collect
from sandbox.evidence.pack import ENTRIES, RECEIPTS, write_pack
from sandbox.evidence.receipts import BatchReceipt, standalone
from tests.audit.test_interop_go import run_go_interop
from tests.evidence.history import History, compliant

ORIGIN = "audit.regsandbox.test/interop"


def test_go_accepts_the_pack_checkpoint_and_receipts(tmp_path: Path) -> None:
    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    compliant(history, "hospital-b", "oncology", "tumour-scans")
    signer = Signer.generate(ORIGIN)
    log_dir = tmp_path / "log"
    half = len(history.events) // 2
    with AuditLog.create(log_dir, ORIGIN, signer) as log:
        log.append_batch(history.events[:half])
        old = log.publish_checkpoint()
        log.append_batch(history.events[half:])
        log.publish_checkpoint()
    pack = tmp_path / "pack"
    write_pack(collect(log_dir, Scope("bank-a")), pack, Signer.generate("officer.test/key"))
    checkpoint = (pack / "checkpoint").read_bytes()
    # The C2SP tlog-proof of every entry, derived from the pack's batch receipt alone.
    batch = BatchReceipt.parse((pack / RECEIPTS).read_bytes())
    lines = (pack / ENTRIES).read_bytes().split(b"\n")[:-1]
    proofs = standalone(batch, Checkpoint.from_text(Note.parse(checkpoint).text).size)
    receipts = [
        {
            "entry_b64": base64.b64encode(line).decode(),
            "proof": proofs[json.loads(line)["index"]].decode(),
        }
        for line in lines
    ]
    assert len(receipts) > 10
    with LogReader(log_dir) as reader:
        assert reader.checkpoint_note == checkpoint
        consistency = [
            {
                "old_checkpoint": old.decode(),
                "proof": [b64encode(h) for h in reader.consistency_proof(half)],
            }
        ]
    run_go_interop(
        {
            "origin": ORIGIN,
            "vkey": signer.verifier.vkey,
            "skey": signer.private_key,
            "checkpoint": checkpoint.decode(),
            "hashes_file": f"log/{HASHES_FILE}",
            "receipts": receipts,
            "consistency": consistency,
        },
        tmp_path,
    )
