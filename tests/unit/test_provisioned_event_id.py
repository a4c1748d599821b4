"""The id under which a sandbox's provisioning is logged: stable across retries only."""

from __future__ import annotations

from typing import Any

from sandbox.lifecycle.sandboxes.provision import _provisioned_event_id


def _sandbox(uid: str, ready: dict[str, str] | None) -> dict[str, Any]:
    conditions = [{"type": "Ready", **ready}] if ready else []
    return {"metadata": {"uid": uid}, "status": {"conditions": conditions}}


def test_a_retry_of_the_same_provisioning_derives_the_same_id() -> None:
    pending = {"status": "False", "lastTransitionTime": "2026-12-06T05:00:00Z"}
    assert _provisioned_event_id(_sandbox("u1", pending)) == _provisioned_event_id(
        _sandbox("u1", dict(pending))
    )
    assert _provisioned_event_id(_sandbox("u1", None)) == _provisioned_event_id(
        _sandbox("u1", None)
    )


def test_another_sandbox_or_a_later_provisioning_gets_its_own_id() -> None:
    first = _provisioned_event_id(_sandbox("u1", None))
    assert _provisioned_event_id(_sandbox("u2", None)) != first
    # Quarantined after being Ready: Ready went False at a later, written time.
    later = {"status": "False", "lastTransitionTime": "2026-12-07T09:30:00Z"}
    assert _provisioned_event_id(_sandbox("u1", later)) != first
