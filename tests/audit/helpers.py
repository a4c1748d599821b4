"""Builders shared by the audit tests."""

from __future__ import annotations

from pathlib import Path

from audit.entry import Actor, Decision, Event, Resource
from audit.log import AuditLog
from audit.note import Signer

ORIGIN = "audit.regsandbox.test/log"


def event(i: int = 0, *, tenant: str = "bank-a", action: str = "dataset.read") -> Event:
    """A small, typical event."""
    return Event(
        actor=Actor(user=f"user{i % 3}@bank.example", groups=("bank-a:members",)),
        action=action,
        resource=Resource(kind="Dataset", name=f"claims-{i}", tenant=tenant, sandbox="fraud"),
        decision=Decision(allow=True, policy_digest="sha256:" + "a" * 64),
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
