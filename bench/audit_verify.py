"""Benchmark full offline verification of a log directory.

    python bench/audit_verify.py --log /tmp/audit-bench

Reports entries per second and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from audit import load_verifier, verify_log


def main() -> None:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--deep", action="store_true", help="also parse every entry")
    args = parser.parse_args()
    verifier = load_verifier(args.log / "log.vkey")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu_start = time.perf_counter(), time.process_time()
    report = verify_log(args.log, [verifier], deep=args.deep)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        f"verified {report.entries} entries in {elapsed:.2f} s: "
        f"{report.entries / elapsed:,.0f} entries/s"
    )
    print(
        f"CPU time {cpu:.2f} s: {report.entries / cpu:,.0f} entries per CPU-second "
        "(what one uncontended core gives)"
    )
    print(
        f"peak RSS {peak / 1024:.0f} MiB (after imports, before verifying: {before / 1024:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
