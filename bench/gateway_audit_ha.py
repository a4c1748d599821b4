"""Measure the gateway's and the audit service's availability under the chart on a node.

    flock /tmp/rsb-dataplane.lock .venv/bin/python bench/gateway_audit_ha.py [--runs 3]

Needs root and a machine that can host a node (see ``sandbox.devenv.dataplane``). The
chart is installed by ``sandbox.devenv.chartstack`` (two gateway replicas, one audit
service); the finance example's sandbox gets a workload pod that reads one object through
the gateway Service without pause, each read on a new connection, no retry
(``sandbox.devenv.failover``). Each run then:

- kills one gateway pod (deleted, no grace period) and reads until the Deployment has
  replaced it: reads, failed reads, the longest gap between two successful reads, the
  time to a Ready replacement;
- kills the audit service's pod the same way and reads until the StatefulSet has
  restarted it: 503s (``AuditUnavailable``), any other failure, the 503 window (last
  200 before to first 200 after), the time to a Ready audit pod, and the reads answered
  200 that have no entry in the log afterwards (must be 0).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sandbox.devenv.chartstack import running_chart_stack
from sandbox.devenv.dataplane import unavailable_reason
from sandbox.devenv.failover import SAMPLE, kill_audit, kill_gateway, read_entries, reading_sandbox
from sandbox.devenv.readloop import Answer, outages
from sandbox.devenv.stack import StackSettings

REPO = Path(__file__).resolve().parents[1]
DIGEST = hashlib.sha256(SAMPLE).hexdigest()


def _unlogged(log: Path, ok: list[Answer], timeout: float = 60.0) -> list[Answer]:
    """Answered reads without an entry, once a checkpoint covers them (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = read_entries(log)
        lost = [a for a in ok if a.request_id not in entries]
        if not lost or time.monotonic() > deadline:
            return lost
        time.sleep(0.5)


def main() -> int:
    """Run the scenarios ``--runs`` times on one chart install; print one row per kill."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"no data plane on this machine: {reason}", file=sys.stderr)
        return 2
    gateway_rows: list[tuple[int, int, float, float]] = []
    audit_rows: list[tuple[int, int, int, float, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="regsandbox-ha-bench-") as tmp:
        settings = StackSettings(directory=Path(tmp), repo=REPO, resync_seconds=1.0, progress=print)
        with running_chart_stack(settings) as stack:
            reading = reading_sandbox(stack, REPO, "ha-bench")
            for run in range(1, args.runs + 1):
                kill = kill_gateway(reading)
                failed = [a for a in kill.answers if a.status != 200]
                wrong = [a for a in kill.answers if a.status == 200 and a.sha256 != DIGEST]
                gap = max((g.seconds for g in outages(kill.answers)), default=0.0)
                gateway_rows.append((len(kill.answers), len(failed), gap, kill.recovery_seconds))
                print(
                    f"run {run} gateway kill: {len(kill.answers)} reads, {len(failed)} failed "
                    f"{sorted({a.status for a in failed})}, {len(wrong)} wrong, longest gap "
                    f"{gap:.2f} s, replacement Ready after {kill.recovery_seconds:.1f} s",
                    flush=True,
                )
                kill = kill_audit(reading)
                refused = [a for a in kill.answers if a.status == 503]
                other = [a for a in kill.answers if a.status not in (200, 503)]
                window = max((g.seconds for g in outages(kill.answers)), default=0.0)
                ok = [a for a in kill.answers if a.status == 200]
                lost = _unlogged(stack.audit_log, ok)
                audit_rows.append(
                    (
                        len(kill.answers),
                        len(refused),
                        len(other),
                        window,
                        kill.recovery_seconds,
                        len(lost),
                    )
                )
                print(
                    f"run {run} audit kill: {len(kill.answers)} reads, {len(refused)} x 503, "
                    f"{len(other)} other failures, 503 window {window:.2f} s, audit pod Ready "
                    f"after {kill.recovery_seconds:.1f} s, {len(lost)} of {len(ok)} answered "
                    "reads without an entry",
                    flush=True,
                )
    print("\n| kill | reads | failed | longest gap | replacement Ready |")
    print("|---|---|---|---|---|")
    for reads, failed, gap, ready in gateway_rows:
        print(f"| gateway pod | {reads} | {failed} | {gap:.2f} s | {ready:.1f} s |")
    print("\n| kill | reads | 503 | other failures | 503 window | audit Ready | lost entries |")
    print("|---|---|---|---|---|---|---|")
    for reads, refused, other, window, ready, lost in audit_rows:
        print(
            f"| audit pod | {reads} | {refused} | {other} | {window:.2f} s | {ready:.1f} s "
            f"| {lost} |"
        )
    if gateway_rows:
        print(
            f"\nmedian gateway gap {statistics.median(r[2] for r in gateway_rows):.2f} s; "
            f"median 503 window {statistics.median(r[3] for r in audit_rows):.2f} s"
        )
    return 0 if all(row[5] == 0 for row in audit_rows) else 1


if __name__ == "__main__":
    sys.exit(main())
