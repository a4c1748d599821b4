"""Builders shared by the audit tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

from audit.canonical import canonical_json
from audit.entry import Actor, DecisionRecord, Event, Resource
from audit.log import CHECKPOINT_FILE, ENTRIES_FILE, HASHES_FILE, OFFSETS_FILE, AuditLog
from audit.merkle import CompactRange, leaf_hash
from audit.note import Signer
from audit.wal import MAGIC, encode_record, read_records

ORIGIN = "audit.regsandbox.test/log"


def event(i: int = 0, *, tenant: str = "bank-a", action: str = "dataset.read") -> Event:
    """A small, typical event."""
    return Event(
        actor=Actor(user=f"user{i % 3}@bank.example", groups=("bank-a:members",)),
        action=action,
        resource=Resource(kind="Dataset", name=f"claims-{i}", tenant=tenant, sandbox="fraud"),
        decision=DecisionRecord(allow=True, policy_digest="sha256:" + "a" * 64),
        outcome="success",
        details={"bytes": i, "object": f"claims/part-{i}.parquet"},
    )


def make_log(path: Path, entries: int, *, batch: int = 10) -> tuple[Signer, list[int]]:
    """Create a log with ``entries`` entries (published), return its key and indices."""
    signer = Signer.generate(ORIGIN)
    indices: list[int] = []
    with AuditLog.create(path, ORIGIN, signer) as log:
        for start in range(0, entries, batch):
            stop = min(entries, start + batch)
            indices += log.append_batch([event(i) for i in range(start, stop)])
    return signer, indices


def forge_after(path: Path, keep: int, old_checkpoint: bytes) -> None:
    """Act as someone who can write the log's volume but not read its key.

    Puts back ``old_checkpoint`` (a signed checkpoint of size ``keep``, as every receipt
    carries one), rewrites every entry from index ``keep`` on (``details.forged``), and
    recomputes CRCs, stored hashes and offsets so the directory is self-consistent.
    """
    fd = os.open(path / ENTRIES_FILE, os.O_RDONLY)
    try:
        records = [data for _, data in read_records(fd, len(MAGIC), 0)]
    finally:
        os.close(fd)
    forged = []
    for index, data in enumerate(records):
        if index >= keep:
            doc = json.loads(data)
            doc["details"] = {**doc.get("details", {}), "forged": True}
            data = canonical_json(doc)
        forged.append(data)
    tree = CompactRange()
    wal, hashes, offsets = bytearray(MAGIC), bytearray(), bytearray()
    for data in forged:
        offsets += len(wal).to_bytes(8, "big")
        wal += encode_record(data)
        hashes += b"".join(tree.append(leaf_hash(data)))
    (path / ENTRIES_FILE).write_bytes(bytes(wal))
    (path / HASHES_FILE).write_bytes(bytes(hashes))
    (path / OFFSETS_FILE).write_bytes(bytes(offsets))
    (path / CHECKPOINT_FILE).write_bytes(old_checkpoint)
