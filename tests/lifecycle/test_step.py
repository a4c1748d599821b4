"""A reconcile step: audit events are durable before the status that shows them.

Against a real audit log in a temporary directory; closing it is how the log goes
down. No API server is needed: a step only touches the audit sink.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from audit.client import AuditUnavailable, LocalAuditSink
from audit.entry import Resource
from audit.log import AuditLog, LogReader
from audit.signing import Signer
from sandbox.api.sandbox import SandboxStatus
from sandbox.api.tenant import TenantStatus
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.step import Step, read_status

ORIGIN = "test.regsandbox/step"


SIGNER = Signer.generate(ORIGIN)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    AuditLog.create(tmp_path / "log", ORIGIN, SIGNER).close()
    return tmp_path / "log"


@pytest.fixture
def sink(log_dir: Path) -> Iterator[LocalAuditSink]:
    opened = LocalAuditSink(log_dir, SIGNER)
    yield opened
    opened.close()


def _platform(sink: LocalAuditSink) -> Platform:
    none = cast(Any, None)  # a step touches only the audit sink and the actor
    return Platform(
        api=none,
        engine=none,
        audit=sink,
        keys=none,
        storage=none,
        cluster_region="onprem:lu-national-1",
        cluster_jurisdiction="LU",
    )


def _body(status: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "t1", "generation": 3}}
    if status is not None:
        body["status"] = status
    return body


def _actions(log_dir: Path) -> list[str]:
    reader = LogReader(log_dir)
    try:
        return [reader.entry(i).action for i in range(reader.size)]
    finally:
        reader.close()


RESOURCE = Resource(kind="Tenant", name="t1", tenant="t1")


def test_status_is_written_only_after_its_events_are_durable(
    sink: LocalAuditSink, log_dir: Path
) -> None:
    step = Step(_platform(sink), _body(), TenantStatus, RESOURCE)
    step.log("tenant.applied", "success", generation=3)
    step.status.namespace = "tenant-t1"
    step.cond("Ready", True, "HomeNamespaceReady")
    result = step.finish()
    assert result.status["namespace"] == "tenant-t1"
    assert result.status["conditions"][0]["reason"] == "HomeNamespaceReady"
    assert result.retry_after is None
    sink.log.close()  # publishes the checkpoint a reader trusts
    assert _actions(log_dir) == ["tenant.applied"]


def test_a_refused_batch_writes_no_status_it_would_have_shown(sink: LocalAuditSink) -> None:
    step = Step(_platform(sink), _body(), TenantStatus, RESOURCE)
    sink.log.close()  # the log is down from here on
    step.log("tenant.applied", "success")
    step.status.namespace = "tenant-t1"
    step.cond("Ready", True, "HomeNamespaceReady")
    step.note("Normal", "Applied", "applied")
    result = step.finish()
    assert "namespace" not in result.status
    ready = result.status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == (
        "Ready",
        "False",
        "AuditLogUnavailable",
    )
    assert result.retry_after is not None
    assert [e.reason for e in result.events] == ["AuditLogUnavailable"]


def test_a_refusal_falls_back_to_what_the_last_commit_put_on_record(
    sink: LocalAuditSink, log_dir: Path
) -> None:
    step = Step(_platform(sink), _body(), SandboxStatus, RESOURCE)
    step.status.tenant = "t1"
    step.log("sandbox.provisioning", "success")
    assert step.commit() == [0]
    step.status.namespace = "sbx-t1-a"
    step.log("sandbox.provisioned", "success")
    sink.log.close()
    assert step.commit() is None
    assert step.failed
    step.status.key_id = "never shown"  # a branch that ignores the refusal still writes none
    result = step.finish()
    assert result.status["tenant"] == "t1"
    assert "namespace" not in result.status
    assert _actions(log_dir) == ["sandbox.provisioning"]


def test_only_fields_the_step_sets_are_written(sink: LocalAuditSink) -> None:
    previous = {"namespace": "tenant-t1", "observedGeneration": 2}
    step = Step(_platform(sink), _body(previous), TenantStatus, RESOURCE)
    assert step.previous.namespace == "tenant-t1"
    step.status.observed_generation = 3
    assert step.finish().status == {"observedGeneration": 3}
    carried = Step(_platform(sink), _body(previous), TenantStatus, RESOURCE, carry=True)
    assert carried.finish().status == previous


def test_a_status_field_that_does_not_parse_is_ignored() -> None:
    status = read_status(
        TenantStatus, _body({"namespace": "tenant-t1", "observedGeneration": "soon", "x": 1})
    )
    assert status.namespace == "tenant-t1"
    assert status.observed_generation is None


def test_a_step_without_an_audit_condition_raises_and_writes_nothing(
    sink: LocalAuditSink,
) -> None:
    """A drift check or teardown must not flip a condition because the log is down."""
    step = Step(_platform(sink), _body(), SandboxStatus, RESOURCE, audit_condition=None)
    step.log("sandbox.drift.corrected", "success")
    step.status.datasets = []
    sink.log.close()
    with pytest.raises(AuditUnavailable):
        step.finish()
