"""Our checkpoints, notes, keys and proofs, checked by golang.org/x/mod/sumdb (Go).

Writes a fixture to a temporary directory and runs ``go test`` in tools/interop; the Go
side verifies with ``note.Open``, re-signs with ``note.Sign``, and checks proofs with
``tlog.CheckRecord`` / ``tlog.CheckTree`` and our stored-hash layout with
``tlog.TreeHash`` / ``tlog.ProveRecord`` / ``tlog.ProveTree``.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.entry import Actor, Event, Resource, encode_entry
from audit.merkle import MemoryHashStore, consistency_proof, inclusion_proof, leaf_hash
from audit.note import Signer, b64encode
from audit.proof import TlogProof

INTEROP = Path(__file__).resolve().parents[2] / "tools" / "interop"


def _go() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"
    assert Path(go).exists(), "the Go toolchain is needed for the interoperability test"
    return go


def run_go_interop(fixture: dict[str, object], workdir: Path) -> None:
    """Write ``fixture`` and fail unless the Go verifier accepts it."""
    path = workdir / "fixture.json"
    path.write_text(json.dumps(fixture))
    env = {**os.environ, "REGSANDBOX_INTEROP_FIXTURE": str(path), "GOFLAGS": "-mod=mod"}
    result = subprocess.run(
        [_go(), "test", "-count=1", "-run", "TestCheckpointAndReceipts", "-v", "./..."],
        cwd=INTEROP,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "--- PASS: TestCheckpointAndReceipts" in output, output


def test_go_verifies_our_formats(tmp_path: Path) -> None:
    origin = "audit.regsandbox.example/interop"
    signer = Signer.generate(origin)
    entries = [
        encode_entry(
            Event(
                actor=Actor(user=f"user{i}"),
                action="dataset.read",
                resource=Resource(kind="Dataset", name=f"d{i}"),
                outcome="success",
                details={"n": i, "text": "é ü \u2014"},
            ),
            i,
        )
        for i in range(37)
    ]
    store = MemoryHashStore(leaf_hash(e) for e in entries)
    (tmp_path / "hashes").write_bytes(b"".join(store.hashes))
    size = len(entries)
    checkpoint = sign_checkpoint(Checkpoint(origin, size, store.root()), [signer])
    receipts = [
        {
            "entry_b64": base64.b64encode(entries[i]).decode(),
            "proof": TlogProof(
                i, tuple(inclusion_proof(store, i, size)), checkpoint, b"extra" if i == 5 else None
            )
            .to_bytes()
            .decode(),
        }
        for i in (0, 1, 5, 16, 31, 32, 36)
    ]
    consistency = []
    for old in (1, 2, 7, 16, 20, 36, 37):
        old_store = MemoryHashStore(leaf_hash(e) for e in entries[:old])
        old_cp = sign_checkpoint(Checkpoint(origin, old, old_store.root()), [signer])
        consistency.append(
            {
                "old_checkpoint": old_cp.decode(),
                "proof": [b64encode(h) for h in consistency_proof(store, old, size)],
            }
        )
    run_go_interop(
        {
            "origin": origin,
            "vkey": signer.verifier.vkey,
            "skey": signer.private_key,
            "checkpoint": checkpoint.decode(),
            "hashes_file": "hashes",
            "receipts": receipts,
            "consistency": consistency,
        },
        tmp_path,
    )


def test_go_verifies_a_log_directory(tmp_path: Path) -> None:
    from audit.log import HASHES_FILE, AuditLog, LogReader

    from .helpers import ORIGIN, event

    signer = Signer.generate(ORIGIN)
    path = tmp_path / "log"
    olds = []
    with AuditLog.create(path, ORIGIN, signer) as log:
        for start in range(0, 45, 9):
            log.append_batch([event(i) for i in range(start, start + 9)])
            olds.append(log.publish_checkpoint())
    with LogReader(path) as reader:
        receipts = [
            {
                "entry_b64": base64.b64encode(reader.entry_bytes(i)).decode(),
                "proof": reader.receipt(i).to_bytes().decode(),
            }
            for i in (0, 8, 9, 31, 44)
        ]
        consistency = [
            {
                "old_checkpoint": old.decode(),
                "proof": [b64encode(h) for h in reader.consistency_proof(int(old.split(b"\n")[1]))],
            }
            for old in olds[:-1]
        ]
        run_go_interop(
            {
                "origin": ORIGIN,
                "vkey": signer.verifier.vkey,
                "skey": signer.private_key,
                "checkpoint": reader.checkpoint_note.decode(),
                "hashes_file": f"log/{HASHES_FILE}",
                "receipts": receipts,
                "consistency": consistency,
            },
            tmp_path,
        )
