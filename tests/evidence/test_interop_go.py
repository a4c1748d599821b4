"""Go's reference code (golang.org/x/mod/sumdb note and tlog) accepts a pack's checkpoint
and every one of its receipts; reuses the audit log's interoperability test."""

from __future__ import annotations

import base64
from pathlib import Path

from audit.log import HASHES_FILE, AuditLog, LogReader
from audit.note import Signer, b64encode
from sandbox.evidence.collect import Scope, collect
from sandbox.evidence.pack import write_pack
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
    receipts = [
        {
            "entry_b64": base64.b64encode(
                (pack / "entries" / proof.name.replace(".tlog-proof", ".json")).read_bytes()
            ).decode(),
            "proof": proof.read_text(),
        }
        for proof in sorted((pack / "receipts").iterdir())
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
