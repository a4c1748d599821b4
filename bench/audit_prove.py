"""Benchmark inclusion and consistency proof generation on an existing log.

    python bench/audit_prove.py --log /tmp/audit-bench --samples 20000

Reports p50 / p99 / max latency of ``inclusion_proof`` and ``consistency_proof`` for
random indices against the latest checkpoint, and checks a sample of the proofs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from audit import LogReader, leaf_hash, verify_inclusion


def _report(name: str, samples: list[float]) -> None:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    print(
        f"{name}: p50 {q[49] * 1e3:.3f} ms  p99 {q[98] * 1e3:.3f} ms  "
        f"max {max(samples) * 1e3:.3f} ms  ({len(samples)} proofs)"
    )


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=20_000)
    args = parser.parse_args()
    rng = random.Random(3)
    with LogReader(args.log) as reader:
        size = reader.size
        root = reader.checkpoint.root
        print(f"log size {size}")
        inclusion: list[float] = []
        for k in range(args.samples):
            index = rng.randrange(size)
            t0 = time.perf_counter()
            proof = reader.inclusion_proof(index)
            inclusion.append(time.perf_counter() - t0)
            if k % 1000 == 0:
                verify_inclusion(leaf_hash(reader.entry_bytes(index)), index, size, proof, root)
        _report("inclusion proof", inclusion)
        consistency: list[float] = []
        for _ in range(args.samples // 4):
            old = rng.randrange(1, size + 1)
            t0 = time.perf_counter()
            reader.consistency_proof(old)
            consistency.append(time.perf_counter() - t0)
        _report("consistency proof", consistency)


if __name__ == "__main__":
    main()
