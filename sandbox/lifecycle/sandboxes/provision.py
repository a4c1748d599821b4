"""Provisioning a Sandbox: describe, check limits, decide, record, provision, mark Ready.

:func:`provision_sandbox` is a sequence of named stages over one
:class:`~sandbox.lifecycle.sandboxes.step.SandboxStep`; each stage adds conditions,
status fields and audit events, and says whether the next one may run. Nothing is
created unless the log has taken the decision first, and grants become usable (the
status the gateway reads) only after their changes are on record.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from sandbox.api.conditions import find_condition
from sandbox.api.meta import parse_duration, provider_region, rfc3339
from sandbox.errors import SandboxError
from sandbox.keys.base import KeyProviderError, KeyRef
from sandbox.kube.apply import delete
from sandbox.lifecycle.decisions import audit_decision, sandbox_policy_status
from sandbox.lifecycle.facts import provision_input
from sandbox.lifecycle.grants import evaluate_grants, grant_events, grant_verdict
from sandbox.lifecycle.objects import parse_time
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.lifecycle.sandboxes.claim import claim_namespace, owned_namespace
from sandbox.lifecycle.sandboxes.desired import WriteRefusedError, desired_objects, write_all
from sandbox.lifecycle.sandboxes.step import LoadedSandbox, SandboxStep, expires_at, load
from sandbox.lifecycle.sandboxes.teardown import expire_sandbox, quarantine, was_quarantined
from sandbox.policy.model import Decision
from sandbox.provision.names import sandbox_id, sandbox_namespace
from sandbox.provision.sandbox_plan import (
    effective_quota,
    namespace_object,
    unoffered_accelerators,
)
from sandbox.storage.profiles import StorageProfileError, storage_class_name

__all__ = ["provision_sandbox"]

_ENGINE_CODES = ("POLICY_ENGINE_", "POLICY_DECISION_")


def provision_sandbox(
    platform: Platform, body: Mapping[str, Any], now: dt.datetime | None = None
) -> StepResult:
    """Decide, then (if allowed) provision or re-converge the sandbox."""
    now = now or dt.datetime.now(dt.UTC)
    step = SandboxStep(platform, body)
    sandbox = load(step)
    if sandbox is None:
        return step.finish()
    end = expires_at(step.body, sandbox.spec)
    _describe(step, sandbox, end)
    if not _within_limits(step, sandbox, end):
        return step.finish()
    if now >= end:
        return expire_sandbox(platform, step.body, now)
    decision = _decide(step, sandbox, end, now)
    if not decision.allow:
        _deny(step, sandbox, decision, end, now)
        return step.finish()
    was_ready = step.was_true("Ready")
    _allow(step, decision)
    if not was_ready and not _record_intent(step, decision):
        return step.finish()
    key = _provision(step, sandbox, was_ready)
    if key is not None:
        _mark_ready(step, sandbox, decision, key, (end, now), was_ready)
    return step.finish()


def _describe(step: SandboxStep, sandbox: LoadedSandbox, end: dt.datetime) -> None:
    """Observed facts that need no record: tenant, sector, region, end, generation."""
    status = step.status
    status.tenant = sandbox.tenant
    status.sector = sandbox.tenant_spec.sector.value
    status.region = sandbox.spec.region
    status.expires_at = end.astimezone(dt.UTC).replace(microsecond=0)
    status.observed_generation = step.generation
    step.commit()  # nothing queued: these facts are what a later refusal still shows


def _within_limits(step: SandboxStep, sandbox: LoadedSandbox, end: dt.datetime) -> bool:
    """The tenant's maximum lifetime and the platform's accelerators, before any policy."""
    created = parse_time(str(step.body["metadata"]["creationTimestamp"]))
    maximum = sandbox.tenant_spec.quota.max_lifetime
    if maximum and end - created > parse_duration(maximum):
        step.fail(
            "LifetimeExceedsTenantMaximum",
            f"the lifetime ends {rfc3339(end)}, beyond the tenant's maximum of {maximum} "
            "from creation; shorten spec.lifetime",
        )
        return False
    unoffered = unoffered_accelerators(sandbox.spec, step.platform.isolation.accelerators)
    if unoffered:
        step.fail(
            "AcceleratorNotOffered",
            f"the platform offers no {', '.join(unoffered)}; remove it from "
            "spec.resources.accelerators, or ask a platform engineer to offer it",
        )
        return False
    return True


def _decide(
    step: SandboxStep, sandbox: LoadedSandbox, end: dt.datetime, now: dt.datetime
) -> Decision:
    """The ``sandbox.provision`` decision on the spec as claimed, with its fixed end."""
    platform, body = step.platform, step.body
    datasets = [d for d in (platform.read("Dataset", r.name) for r in sandbox.spec.datasets) if d]
    claimed = {
        **dict(body),
        "spec": {**dict(body["spec"]), "lifetime": {"expiresAt": rfc3339(end)}},
    }
    try:
        policy_input = provision_input(platform, sandbox.tenant_obj, claimed, datasets, now=now)
    except (SandboxError, ValueError) as exc:  # an input that cannot be built is a deny
        return Decision.deny("POLICY_INPUT_INVALID", f"the policy input is invalid: {exc}")
    return platform.decide(policy_input)


def _deny(
    step: SandboxStep,
    sandbox: LoadedSandbox,
    decision: Decision,
    end: dt.datetime,
    now: dt.datetime,
) -> None:
    """Refused: say why; a running sandbox now denied is cut off (quarantined).

    An unreachable engine is no verdict: a running sandbox is left as it is, and the
    step is retried.
    """
    platform = step.platform
    engine_down = any(v.code.startswith(_ENGINE_CODES) for v in decision.violations)
    reason = "PolicyEngineUnavailable" if engine_down else "PolicyDenied"
    message = "; ".join(f"{v.code}: {v.msg}" for v in decision.violations)
    ns = sandbox_namespace(sandbox.tenant, sandbox.name)
    # Only this sandbox's own namespace: one that another sandbox of the same name
    # holds (see claim.py) is not this sandbox's to cut off.
    provisioned = (
        not engine_down
        and owned_namespace(platform.api, ns, sandbox.tenant, sandbox.name)[0] is not None
    )
    if provisioned:
        reason = "NonCompliant"
        quarantine(platform, ns, sandbox.tenant, sandbox.name)
    step.cond("PolicyCompliant", False, reason, message)
    if not engine_down:
        grants = evaluate_grants(platform, sandbox.tenant_obj, step.body, sandbox.spec, end, now)
        step.cond("DatasetsGranted", *grant_verdict(grants))
        if grants:
            # Shown for the person who fixes the spec; a sandbox that is not Ready
            # reads nothing, whatever its grants say.
            step.status.datasets = grants
    policy = sandbox_policy_status(decision)
    previous = step.previous.policy
    already_denied = previous is not None and previous.wire() == policy.wire()
    step.fail(reason, message, retry=15 if engine_down else None)
    step.status.policy = policy
    if provisioned and not already_denied:
        step.note("Warning", "Quarantined", f"all traffic of {ns} is cut: {message}")
    if not already_denied and not engine_down:
        action = "sandbox.quarantined" if provisioned else "sandbox.denied"
        step.log(action, "denied", policy=decision)


def _warned(decision: Decision) -> str:
    """The findings of SandboxPolicies in ``warn`` mode, as one message."""
    warned = [w for w in decision.warnings if w.enforcement == "warn"]
    return "; ".join(f"{w.code}: {w.msg} (SandboxPolicy {w.policy})" for w in warned)


def _allow(step: SandboxStep, decision: Decision) -> None:
    """PolicyCompliant=True (with the warnings of ``warn`` policies, if any)."""
    text = _warned(decision)
    if text:
        step.cond("PolicyCompliant", True, "AllowedWithWarnings", text)
    else:
        step.cond("PolicyCompliant", True, "PolicyAllowed", "")
    step.status.policy = sandbox_policy_status(decision)


def _record_intent(step: SandboxStep, decision: Decision) -> bool:
    """Fail closed: nothing is created unless the log has taken the decision first."""
    step.commit()  # a refusal below still shows the decision, as before
    step.log(
        "sandbox.provisioning",
        "success",
        policy=decision,
        event_id=_intent_event_id(step.body, decision),
    )
    return step.commit() is not None


def _intent_event_id(body: Mapping[str, Any], decision: Decision) -> str:
    """The same id for every attempt to record one provisioning intent under one decision.

    A leader that dies after the log took ``sandbox.provisioning`` leaves the sandbox
    unprovisioned; the replica taking over decides again and derives the same id (same
    uid, same last Ready transition, same decision), so the log keeps the one entry it
    has. A decision that differs (another policy bundle, other findings) is another
    intent with an id of its own, as is any provisioning after a written Ready transition.
    """
    recorded = audit_decision(decision).model_dump_json()
    return _derived_event_id("sandbox.provisioning", body, recorded)


def _provision(step: SandboxStep, sandbox: LoadedSandbox, was_ready: bool) -> KeyRef | None:
    """The key, then every object in order; None (Ready=False, retried) if refused."""
    platform, body = step.platform, step.body
    sid = sandbox_id(sandbox.tenant, sandbox.name)
    quarantined = was_quarantined(body)
    claimed = False
    if not was_ready:
        # Before the key: the id may be another sandbox's, and so would its key be.
        namespace = namespace_object(sandbox.name, sandbox.tenant, sandbox.tenant_spec)
        holder, claimed = claim_namespace(
            platform.api, namespace, sandbox.tenant, sandbox.name, platform.versions
        )
        if holder is not None:
            step.fail(
                "NameTaken",
                f"namespace {namespace['metadata']['name']} (this sandbox's name and key id) "
                f"belongs to {holder}; rename this sandbox",
                retry=300,
            )
            return None
    try:
        # Region-catalogue ids are "provider:region"; key stores want the bare region.
        key = platform.keys.create(
            sid,
            provider_region(sandbox.spec.region),
            {"regsandbox.io/tenant": sandbox.tenant, "regsandbox.io/sandbox": sandbox.name},
        )
        objects = desired_objects(
            platform, body, sandbox.tenant, sandbox.tenant_spec, sandbox.spec, key
        )
        if claimed:  # just created with these very fields: nothing to write again
            objects = [obj for obj in objects if obj["kind"] != "Namespace"]
        # A first provisioning creates (cheaper for the API server); a re-converge applies.
        write_all(
            platform.api,
            objects,
            first=not was_ready and not quarantined,
            versions=platform.versions,
        )
        if quarantined:
            ns = sandbox_namespace(sandbox.tenant, sandbox.name)
            delete(platform.api, "NetworkPolicy", "quarantine", ns)
    except (KeyProviderError, StorageProfileError, WriteRefusedError) as exc:
        step.fail("ProvisioningFailed", str(exc), retry=30)
        return None
    return key


def _provisioned_event_id(body: Mapping[str, Any]) -> str:
    """The same id for every attempt to record one provisioning, a new one for the next.

    An operator that dies after the log took ``sandbox.provisioned`` but before Ready
    was written leaves the sandbox as it was; the next attempt (another replica, after
    a failover) sees the same uid and the same last Ready transition, so it derives the
    same id and the log keeps one entry. A later provisioning (after a quarantine) comes
    after a Ready transition that was written, so it gets an id of its own.
    """
    return _derived_event_id("sandbox.provisioned", body)


def _derived_event_id(action: str, body: Mapping[str, Any], *facts: str) -> str:
    """UUIDv5 of ``action``, the sandbox's uid, its last Ready transition and ``facts``."""
    ready = find_condition((body.get("status") or {}).get("conditions"), "Ready") or {}
    attempt = (
        f"{body['metadata'].get('uid')}/{ready.get('status')}/{ready.get('lastTransitionTime')}"
    )
    return str(uuid.uuid5(_EVENT_IDS, "/".join((f"{action}/{attempt}", *facts))))


_EVENT_IDS = uuid.UUID("6f0d2b7e-4c1a-5e3b-9a8d-2f6c1b0e7a41")
"""Namespace of the audit event ids regsandbox derives (UUIDv5)."""


def _mark_ready(
    step: SandboxStep,
    sandbox: LoadedSandbox,
    decision: Decision,
    key: KeyRef,
    times: tuple[dt.datetime, dt.datetime],
    was_ready: bool,
) -> None:
    """Grants, conditions and status of a provisioned sandbox, and what must be logged first.

    Grants become usable when this status is written: their changes (and the
    provisioning) are logged first, as one durable batch, by the step's commit.
    """
    platform = step.platform
    end, now = times
    sid = sandbox_id(sandbox.tenant, sandbox.name)
    ns = sandbox_namespace(sandbox.tenant, sandbox.name)
    storage_class = storage_class_name(sid)
    grants = evaluate_grants(platform, sandbox.tenant_obj, step.body, sandbox.spec, end, now)
    step.cond("DatasetsGranted", *grant_verdict(grants))
    quota = effective_quota(sandbox.spec, sandbox.tenant_spec.quota)
    capped = (
        f"; quota capped by the tenant's ceilings for {', '.join(quota.capped)}"
        if quota.capped
        else ""
    )
    step.cond(
        "Isolated",
        True,
        "IsolationApplied",
        "restricted Pod Security, default-deny NetworkPolicies, quota and RBAC applied" + capped,
    )
    step.cond(
        "StorageEncrypted",
        True,
        "EncryptedStorageClass",
        f"workspace uses StorageClass {storage_class} encrypted with key {key.key_id}",
    )
    step.cond("Ready", True, "Provisioned", f"namespace {ns} is ready")
    status = step.status
    status.namespace, status.key_id, status.storage_class = ns, key.key_id, storage_class
    status.datasets = grants
    step.queue(
        grant_events(
            platform, step.resource, step.previous.datasets, grants, decision.policy_digest
        )
    )
    if not was_ready:
        step.log(
            "sandbox.provisioned",
            "success",
            policy=decision,
            event_id=_provisioned_event_id(step.body),
            namespace=ns,
            keyId=key.key_id,
            storageClass=storage_class,
        )
        step.note("Normal", "Provisioned", f"namespace {ns} provisioned with key {key.key_id}")
    previous_digest = step.previous.policy.digest if step.previous.policy else None
    text = _warned(decision)
    if text and previous_digest != decision.policy_digest:
        step.note("Warning", "PolicyWarning", text)
