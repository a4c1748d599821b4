"""Benchmark durable appends through the batch API; leaves the log behind.

    python bench/audit_append.py --entries 1000000 --log /tmp/audit-bench

Reports entries per second (time inside ``append_batch`` only, and wall clock including
building the events) and the latency of ``append_batch`` calls (p50, p99, max). Every
call returns only after its entries are fsynced.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from audit import Actor, AuditLog, DecisionRecord, Event, Resource
from audit.log import KEY_FILE
from audit.signing import generate_key_file, load_signer

ORIGIN = "bench.regsandbox.example/audit"


def make_event(rng: random.Random) -> Event:
    """A dataset read of typical size (~700 bytes canonical)."""
    n = rng.randrange(10**9)
    return Event(
        actor=Actor(
            user=f"user{n % 50}@bank.example",
            groups=("bank-a:members",),
            pod="sbx-bank-a-fraud/trainer-0",
        ),
        action="dataset.read",
        resource=Resource(kind="Dataset", name="claims-2024", tenant="bank-a", sandbox="fraud"),
        decision=DecisionRecord(allow=True, policy_digest="sha256:" + "ab" * 32),
        outcome="success",
        request_id=f"req-{n}",
        details={
            "object": f"claims/part-{n % 1000:05d}.parquet",
            "bytes": n,
            "sha256": f"{n:064x}",
        },
    )


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=256, help="entries per append_batch")
    args = parser.parse_args()

    if (args.log / "log.json").exists():
        log = AuditLog(args.log, load_signer(args.log / KEY_FILE))
    else:
        args.log.mkdir(parents=True, exist_ok=True)
        signer = generate_key_file(args.log / KEY_FILE, ORIGIN)
        log = AuditLog.create(args.log, ORIGIN, signer)
    assert isinstance(log, AuditLog)
    rng = random.Random(7)
    latencies: list[float] = []
    appended = 0
    start = time.perf_counter()
    with log:
        while appended < args.entries:
            batch = [make_event(rng) for _ in range(min(args.batch, args.entries - appended))]
            t0 = time.perf_counter()
            log.append_batch(batch)
            latencies.append(time.perf_counter() - t0)
            appended += len(batch)
        total = log.size
    wall = time.perf_counter() - start
    inside = sum(latencies)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(f"appended {appended} entries in batches of {args.batch} (log now {total})")
    print(f"durable appends/s (append_batch time): {appended / inside:,.0f}")
    print(f"durable appends/s (wall, incl. building events): {appended / wall:,.0f}")
    print(
        f"append_batch latency ms: p50 {q[49] * 1e3:.2f}  p99 {q[98] * 1e3:.2f}  "
        f"max {max(latencies) * 1e3:.2f}"
    )
    size = sum(p.stat().st_size for p in args.log.iterdir())
    print(f"log directory: {size / 2**20:,.0f} MiB")


if __name__ == "__main__":
    main()
