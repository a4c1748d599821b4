"""Reconcile ids in the audit entries, and one provisioning intent per provisioning.

Issue 19: "kill the leader while 50 sandboxes are being created; all become Ready, none
twice-provisioned (no duplicate audit records of provisioning)". A leader that dies
after the log took ``sandbox.provisioning`` leaves the Sandbox as it read it; the replica
taking over decides again from the same object and must not log a second intent.
Against a real audit log in a temporary directory (a step touches only the log).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from audit.client import LocalAuditSink
from audit.entry import Event
from audit.log import AuditLog
from audit.signing import Signer
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.sandboxes import provision
from sandbox.lifecycle.sandboxes.step import SandboxStep
from sandbox.policy.model import Decision

ORIGIN = "test.regsandbox/reconcile-ids"
SIGNER = Signer.generate(ORIGIN)
ALLOWED = Decision(allow=True, policy_digest="sha256:" + "a" * 64)


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[LocalAuditSink]:
    AuditLog.create(tmp_path / "log", ORIGIN, SIGNER).close()
    opened = LocalAuditSink(tmp_path / "log", SIGNER)
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


def _sandbox(uid: str = "u-1", ready: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "fraud", "namespace": "tenant-acme", "uid": uid, "generation": 1},
        "spec": {},
    }
    if ready is not None:
        body["status"] = {"conditions": [{"type": "Ready", **ready}]}
    return body


def _entries(sink: LocalAuditSink) -> list[dict[str, Any]]:
    log = sink.log
    return [log.entry(i).model_dump(mode="json") for i in range(log.size)]


def test_each_reconcile_stamps_its_entries_with_its_own_id(sink: LocalAuditSink) -> None:
    platform = _platform(sink)
    first, second = SandboxStep(platform, _sandbox()), SandboxStep(platform, _sandbox())
    first.log("sandbox.quarantined", "success")
    first.log("sandbox.released", "success")
    first.queue([first_event := _event(request_id="from-elsewhere")])
    second.log("sandbox.quarantined", "success")
    assert first.commit() == [0, 1, 2]
    assert second.commit() == [3]
    ids = [e["request_id"] for e in _entries(sink)]
    assert ids == [first.reconcile_id, first.reconcile_id, "from-elsewhere", second.reconcile_id]
    assert first.reconcile_id != second.reconcile_id
    assert first_event.request_id == "from-elsewhere"


def _event(request_id: str) -> Event:
    return Event(
        request_id=request_id,
        actor={"user": "someone"},  # type: ignore[arg-type]
        action="dataset.granted",
        resource={"kind": "Dataset", "name": "claims"},  # type: ignore[arg-type]
        outcome="success",
    )


def _intent(sink: LocalAuditSink, body: dict[str, Any], decision: Decision = ALLOWED) -> bool:
    step = SandboxStep(_platform(sink), body)
    return provision._record_intent(step, decision)


def _intents(sink: LocalAuditSink) -> list[dict[str, Any]]:
    return [e for e in _entries(sink) if e["action"] == "sandbox.provisioning"]


def test_a_takeover_deciding_again_from_the_same_object_logs_no_second_intent(
    sink: LocalAuditSink,
) -> None:
    assert _intent(sink, _sandbox())  # the old leader, killed right after this
    assert _intent(sink, _sandbox())  # the new leader, from the same object
    (intent,) = _intents(sink)
    assert intent["decision"]["policy_digest"] == ALLOWED.policy_digest


def test_another_decision_or_a_new_attempt_is_a_new_intent(sink: LocalAuditSink) -> None:
    assert _intent(sink, _sandbox())
    other_bundle = Decision(allow=True, policy_digest="sha256:" + "b" * 64)
    assert _intent(sink, _sandbox(), other_bundle)  # not refused as a reused event id
    failed = {"status": "False", "reason": "ProvisioningFailed", "lastTransitionTime": "T1"}
    assert _intent(sink, _sandbox(ready=failed))  # after a failure that was written
    assert _intent(sink, _sandbox(uid="u-2"))  # a new Sandbox of the same name
    assert len(_intents(sink)) == 4
