"""Grant refresh: decide a Ready sandbox's grants again when a requested Dataset changed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.api.sandbox import DatasetGrant, SandboxSpec
from sandbox.lifecycle.grants import evaluate_grants, grant_events, grant_verdict
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.lifecycle.sandboxes.step import SandboxStep, expires_at

__all__ = ["refresh_grants", "refresh_grants_in"]


def _datasets_changed(
    platform: Platform, spec: SandboxSpec, recorded: Sequence[DatasetGrant]
) -> bool:
    by_name = {o.name: o for o in recorded}
    for request in spec.datasets:
        live = platform.read("Dataset", request.name)
        seen = by_name.get(request.name)
        live_generation = int(live["metadata"].get("generation") or 0) if live else None
        if seen is None or seen.generation != live_generation:
            return True
    return False


def refresh_grants(
    platform: Platform,
    body: Mapping[str, Any],
    tenant_obj: Mapping[str, Any],
    spec: SandboxSpec,
    now: dt.datetime | None = None,
) -> StepResult:
    """Decide the grants again when a requested Dataset changed or disappeared.

    A grant that no longer holds is revoked: recorded in the audit log, then removed
    from the status the gateway reads. A log that cannot take the record raises.
    """
    step = SandboxStep(platform, body, audit_condition=None)
    refresh_grants_in(step, tenant_obj, spec, now)
    return step.finish()


def refresh_grants_in(
    step: SandboxStep,
    tenant_obj: Mapping[str, Any],
    spec: SandboxSpec,
    now: dt.datetime | None = None,
) -> None:
    """:func:`refresh_grants` as a stage of another step (the drift check)."""
    platform = step.platform
    recorded = step.previous.datasets
    if not _datasets_changed(platform, spec, recorded):
        return
    now = now or dt.datetime.now(dt.UTC)
    end = expires_at(step.body, spec)
    grants = evaluate_grants(platform, tenant_obj, step.body, spec, end, now)
    changes = grant_events(platform, step.resource, recorded, grants, platform.engine.policy_digest)
    if changes:
        step.queue(changes)
        revoked = [e.details["dataset"] for e in changes if e.action == "dataset.revoked"]
        if revoked:
            step.note(
                "Warning", "GrantRevoked", f"access revoked to {', '.join(map(str, revoked))}"
            )
    step.status.datasets = grants
    step.cond("DatasetsGranted", *grant_verdict(grants))
