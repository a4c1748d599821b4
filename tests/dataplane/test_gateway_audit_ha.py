"""The gateway and the audit service under the chart, while a sandbox's pod reads without pause.

The chart on a node (two gateway replicas behind a Service, one audit service with its
volume), a sandbox with a granted dataset and its workload pod reading one object again
and again through the gateway Service, each read on a new connection
(:mod:`sandbox.devenv.failover`, :class:`~sandbox.devenv.readloop.ReadLoop`):

- one gateway pod is killed (deleted with no grace period): reads keep succeeding
  through the other replica while the Deployment replaces it; a read may fail only as a
  connection the dying pod cut, never with a wrong answer;
- the audit service's pod is killed: the gateway answers 503 ``AuditUnavailable`` —
  never the data — until the StatefulSet has restarted it, then 200 again; and every
  read that was answered 200, before, during or after, has its ``dataset.read`` entry,
  with the same SHA-256, in the restarted service's log: no acknowledged entry is lost.

The figures (failed reads, longest gap, time to recover) are measured by
``bench/gateway_audit_ha.py`` (BENCHMARKS.md, issue 19).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.devenv.chartstack import running_chart_stack
from sandbox.devenv.dataplane import unavailable_reason
from sandbox.devenv.failover import (
    SAMPLE,
    ReadingSandbox,
    kill_audit,
    kill_gateway,
    read_entries,
    reading_sandbox,
)
from sandbox.devenv.readloop import outages
from sandbox.devenv.stack import StackSettings

from .pods import wait_for

pytestmark = pytest.mark.dataplane

DIGEST = hashlib.sha256(SAMPLE).hexdigest()


@pytest.fixture(scope="module")
def reading(repo_root: Path) -> Iterator[ReadingSandbox]:
    """The chart on a node of its own, and a sandbox whose pod reads the sample object."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the data-plane tests, but: {reason}", pytrace=False)
        pytest.skip(f"no data plane on this machine: {reason}")
    directory = Path(tempfile.mkdtemp(prefix="regsandbox-ha-dp-"))
    settings = StackSettings(directory=directory, repo=repo_root, resync_seconds=1.0)
    try:
        with running_chart_stack(settings) as stack:
            yield reading_sandbox(stack, repo_root)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_reads_continue_through_the_service_while_a_gateway_pod_dies(
    reading: ReadingSandbox,
) -> None:
    kill = kill_gateway(reading)
    during = [a for a in kill.answers if kill.killed_after < a.n <= kill.recovered_after]
    assert [a for a in during if a.status == 200], "no read succeeded while a gateway was down"
    assert all(a.sha256 == DIGEST for a in kill.answers if a.status == 200)
    failed = [a for a in kill.answers if a.status != 200]
    # Only connections the dying pod cut (status 0); never an error answer, never wrong data.
    assert {a.status for a in failed} <= {0}, failed
    # A client retrying twice would have noticed nothing.
    assert all(gap.failed <= 2 for gap in outages(kill.answers)), outages(kill.answers)


def test_the_gateway_answers_503_not_data_while_the_audit_service_restarts_and_loses_nothing(
    reading: ReadingSandbox,
) -> None:
    kill = kill_audit(reading)
    refused = [a for a in kill.answers if a.status != 200]
    assert refused, "the audit service's restart went unnoticed"
    # While the log is away the gateway refuses and says why; it never sends the data.
    assert {(a.status, a.reason) for a in refused} == {(503, "AuditUnavailable")}, refused
    ok = [a for a in kill.answers if a.status == 200]
    assert all(a.sha256 == DIGEST for a in ok)
    assert [a for a in ok if a.n > kill.recovered_after]
    # Every read answered 200 was acknowledged by the log before it was answered: each
    # has its entry in the log the restarted service serves.
    # (A reader of the volume sees entries once a checkpoint covers them, within the
    # service's checkpoint interval: wait for that, bounded.)
    log = reading.stack.audit_log

    def covered() -> dict[str, list[dict[str, object]]] | None:
        found = read_entries(log)
        return found if all(a.request_id in found for a in ok) else None

    try:
        entries = wait_for(covered, 60, "a checkpoint covering every answered read")
    except TimeoutError:
        entries = read_entries(log)
    lost = [a.n for a in ok if a.request_id not in entries]
    assert lost == [], (
        f"{len(lost)} of {len(ok)} answered reads have no audit entry: reads {lost} "
        f"(killed after read {kill.killed_after}, back after read {kill.recovered_after})"
    )
    for answer in ok:
        [entry] = entries[answer.request_id]
        assert entry["outcome"] == "success"
        assert entry["details"]["sha256"] == answer.sha256
