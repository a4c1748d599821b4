"""Benchmark an evidence pack of one sandbox with many audit entries; leaves it behind.

    python bench/evidence_pack.py --entries 100000 --dir /tmp/evidence-bench

Writes a log whose one sandbox has a whole life (provisioning, grant, reads through the
gateway, a reviewed export, expiry with the key destroyed), then times ``collect`` +
``write_pack`` (what ``sandboxctl evidence pack`` does) and ``verify_pack`` (what
``sandboxctl evidence verify`` does, the batch receipt and every finding included), and
reports the pack's size. Building the log is not timed. Wall clock and CPU time are both
reported with the load average: on a shared machine the CPU time says what the code costs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import time
from pathlib import Path

from audit import Actor, AuditLog, DecisionRecord, Event, Resource, Signer
from sandbox.evidence.collect import Scope, collect
from sandbox.evidence.pack import write_pack
from sandbox.evidence.verify import verify_pack

ORIGIN = "bench.regsandbox.example/evidence"
TENANT, SANDBOX, DATASET = "bank-a", "fraud", "card-claims"
NS = f"sbx-{TENANT}-{SANDBOX}"
OPERATOR = Actor(user="system:serviceaccount:regsandbox-system:regsandbox-operator")
ALLOW = DecisionRecord(allow=True, policy_digest="sha256:" + "5e" * 32)


def _op(action: str, details: dict[str, object], *, kind: str = "Sandbox") -> Event:
    name = SANDBOX if kind == "Sandbox" else f"{SANDBOX}-model"
    decided = action in ("dataset.granted", "sandbox.provisioned", "model.export.released")
    return Event(
        actor=OPERATOR,
        action=action,
        resource=Resource(
            kind=kind, name=name, namespace=f"tenant-{TENANT}", tenant=TENANT, sandbox=SANDBOX
        ),
        decision=ALLOW if decided or action.startswith("model.export.") else None,
        outcome="success",
        details=details,
    )


def _read(n: int) -> Event:
    return Event(
        request_id=f"{n:032x}",
        actor=Actor(service_account=f"{NS}/trainer", pod=f"{NS}/train-0"),
        action="dataset.read",
        resource=Resource(
            kind="Dataset", name=DATASET, namespace=NS, tenant=TENANT, sandbox=SANDBOX
        ),
        decision=DecisionRecord(allow=True),
        outcome="success",
        details={
            "phase": "read",
            "method": "GET",
            "status": 200,
            "key": f"part-{n % 1000:05d}.parquet",
            "bytes": 65536,
            "sha256": f"{n:064x}",
            "whole_object": True,
            "object_size": 65536,
        },
    )


def history(entries: int) -> list[Event]:
    """A sandbox's whole life with ``entries`` entries in all, mostly reads."""
    key = "local:bench-key"
    head = [
        _op("sandbox.provisioning", {}),
        _op("dataset.granted", {"dataset": DATASET}),
        _op("sandbox.provisioned", {"namespace": NS, "keyId": key, "storageClass": "enc"}),
    ]
    sha = "ab" * 32
    export = {
        "sha256": sha,
        "requester": "alice@bank.example",
        "approvers": ["bob@bank.example", "carol@bank.example"],
    }
    tail = [
        _op(
            "model.export.policy-checked",
            {"sha256": sha, "required_approvals": 2},
            kind="ModelExport",
        ),
        *[
            Event(
                actor=Actor(user=f"{who}@bank.example"),
                action="model.export.reviewed",
                resource=Resource(
                    kind="ModelExport",
                    name=f"{SANDBOX}-model",
                    namespace=f"tenant-{TENANT}",
                    tenant=TENANT,
                    sandbox=SANDBOX,
                ),
                outcome="success",
                details={"decision": "approve"},
            )
            for who in ("bob", "carol")
        ],
        _op("model.export.releasing", export, kind="ModelExport"),
        _op("model.export.released", export, kind="ModelExport"),
        _op("dataset.revoked", {"dataset": DATASET, "why": "sandbox.expired"}),
        _op("key.destroyed", {"keyId": key, "provider": "local", "outcome": "destroyed"}),
        _op("sandbox.expired", {"namespace": NS}),
    ]
    reads = [_read(n) for n in range(max(entries - len(head) - len(tail), 0))]
    return head + reads + tail


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/evidence-bench"))  # noqa: S108
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    signer = Signer.generate(ORIGIN)
    events = history(args.entries)
    with AuditLog.create(args.dir / "log", ORIGIN, signer) as log:
        for start in range(0, len(events), 1000):
            log.append_batch(events[start : start + 1000])
        log.publish_checkpoint()
    officer = Signer.generate("bench.regsandbox.example/officer")

    load_before = os.getloadavg()
    started, cpu0 = time.perf_counter(), time.process_time()
    found = collect(args.dir / "log", Scope(TENANT, SANDBOX))
    collected = time.perf_counter()
    _, findings = write_pack(found, args.dir / "pack", officer)
    packed, cpu1 = time.perf_counter(), time.process_time()
    report = verify_pack(args.dir / "pack", [officer.verifier, signer.verifier])
    verified, cpu2 = time.perf_counter(), time.process_time()

    assert report.ok, report.problems[:5]
    assert {f.status for f in findings} == {"satisfied"}, findings
    size = sum(p.stat().st_size for p in (args.dir / "pack").rglob("*") if p.is_file())
    print(f"entries in the pack: {len(found.entries):,} (log size {found.size:,})")
    print(
        f"pack: {packed - started:.1f} s (collect {collected - started:.1f} s, "
        f"write {packed - collected:.1f} s; CPU {cpu1 - cpu0:.1f} s); {size / 2**20:.0f} MiB"
    )
    print(
        f"verify: {verified - packed:.1f} s (CPU {cpu2 - cpu1:.1f} s; "
        f"{report.receipts:,} receipts, {report.files:,} files)"
    )
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    before, after = (" ".join(f"{x:.2f}" for x in load) for load in (load_before, os.getloadavg()))
    print(f"load average (1, 5, 15 min): {before} before, {after} after")


if __name__ == "__main__":
    main()
