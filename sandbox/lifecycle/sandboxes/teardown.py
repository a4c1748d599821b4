"""The end of a Sandbox: cut off (quarantine, retained expiry) or torn down, key destroyed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sandbox.api.meta import rfc3339
from sandbox.api.sandbox import SandboxSpec
from sandbox.keys.base import KeyDestruction
from sandbox.kube.apply import apply, delete, get, list_objects
from sandbox.lifecycle.grants import revoke_all
from sandbox.lifecycle.objects import object_meta, tenant_of
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.lifecycle.sandboxes.claim import other_owner, owned_namespace
from sandbox.lifecycle.sandboxes.step import SandboxStep
from sandbox.provision.names import managed_labels, sandbox_id, sandbox_namespace
from sandbox.provision.sandbox_plan import WORKLOAD_ROLE, quarantine_policy
from sandbox.storage.profiles import storage_class_name

__all__ = [
    "ANNOTATION_KEY_AUDITED",
    "expire_sandbox",
    "quarantine",
    "revoke_access",
    "teardown_sandbox",
    "was_quarantined",
]

ANNOTATION_KEY_AUDITED = "regsandbox.io/key-destruction-audited"
"""Set once ``key.destroyed`` is in the audit log, so a retry does not log it again."""


def was_quarantined(body: Mapping[str, Any]) -> bool:
    """Whether the sandbox was cut off (non-compliant, or retained after expiry)."""
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("reason") in ("NonCompliant", "ExpiredRetained") for c in conditions)


def quarantine(platform: Platform, ns: str, tenant: str, name: str) -> None:
    """Cut all traffic of a sandbox namespace: a deny-all policy and no allow policies.

    NetworkPolicies add up, so a deny-all policy alone would not cut anything: every
    policy that allows traffic is deleted beside it.
    """
    labels = managed_labels(tenant=tenant, sandbox=name)
    apply(platform.api, quarantine_policy(ns, labels))
    for live in list_objects(platform.api, "NetworkPolicy", ns):
        if live["metadata"]["name"] != "quarantine":
            delete(platform.api, "NetworkPolicy", live["metadata"]["name"], ns)


def revoke_access(platform: Platform, ns: str) -> None:
    """Remove the workload's access to the namespace (its RoleBinding)."""
    delete(platform.api, "RoleBinding", WORKLOAD_ROLE, ns)


def teardown_sandbox(
    platform: Platform, body: Mapping[str, Any], *, action: str = "sandbox.deleted"
) -> StepResult:
    """Remove access, delete the namespace (and wait), destroy the key, record it all.

    Returns with ``retry_after`` while the namespace is still terminating. When the log
    cannot take the record, the error is raised: the finalizer stays, and the retry
    (which finds the key gone) still names the key from the status.
    """
    step = SandboxStep(platform, body, audit_condition=None)
    _teardown(step, action)
    return step.finish()


def _teardown(step: SandboxStep, action: str) -> bool:
    """Tear down into ``step``; whether it is done (False: the namespace still goes)."""
    platform = step.platform
    name, namespace, _ = object_meta(step.body)
    tenant = tenant_of(namespace) or "unknown"
    ns, sid = sandbox_namespace(tenant, name), sandbox_id(tenant, name)
    live, holder = owned_namespace(platform.api, ns, tenant, name)
    holder = holder or (other_owner(platform.api, tenant, name) if live is None else None)
    if holder is not None:
        # The name is another sandbox's (see claim.py): this one never had a namespace
        # or a key, and the holder's stay.
        destruction = KeyDestruction(
            sid,
            "none",
            "absent",
            confirmation=f"this sandbox never had a key: {sid} belongs to {holder}",
        )
        _record_end_once(step, destruction, action, ns)
        return True
    if live is not None:
        revoke_access(platform, ns)
        delete(platform.api, "Namespace", ns)
        if get(platform.api, "Namespace", ns) is not None:
            step.retry(1.0, f"waiting for namespace {ns} to be deleted")
            return False
    delete(platform.api, "StorageClass", storage_class_name(sid))
    destruction = platform.keys.destroy(sid)
    _record_end_once(step, destruction, action, ns)
    return True


def _record_end_once(step: SandboxStep, destruction: KeyDestruction, action: str, ns: str) -> None:
    """:func:`_record_end` unless a previous attempt's record is already durable."""
    annotations = (step.body.get("metadata") or {}).get("annotations") or {}
    if ANNOTATION_KEY_AUDITED not in annotations:
        _record_end(step, destruction, action, ns)


def _record_end(step: SandboxStep, destruction: KeyDestruction, action: str, ns: str) -> None:
    """Revocations, ``key.destroyed`` and ``action`` as one durable batch."""
    # A retry (the log was down, or the operator died, after the key went) finds no
    # key: the entry still names the key this sandbox had, from its status.
    key_id = destruction.key_id or step.previous.key_id
    step.queue(revoke_all(step.platform, step.resource, step.previous.datasets, action))
    destroyed = _destroyed(destruction, key_id)
    step.queue([step.platform.event("key.destroyed", step.resource, "success", details=destroyed)])
    step.log(action, "success", namespace=ns)
    # One durable batch: a retry never logs the revocations twice.
    indices = step.commit() or []
    step.status.datasets = []
    step.result.annotations[ANNOTATION_KEY_AUDITED] = str(indices[-2])
    step.note("Normal", "KeyDestroyed", f"key {key_id or '(none)'} {destruction.outcome}")


def _destroyed(destruction: KeyDestruction, key_id: str | None) -> dict[str, Any]:
    """The ``key.destroyed`` details: the key, the provider, and the provider's evidence."""
    details: dict[str, Any] = {
        "keyId": key_id,
        "provider": destruction.provider,
        "outcome": destruction.outcome,
    }
    if destruction.confirmation is not None:
        details["confirmation"] = destruction.confirmation
    if destruction.deletion_date is not None:
        details["deletionDate"] = rfc3339(destruction.deletion_date)
    return details


def expire_sandbox(
    platform: Platform, body: Mapping[str, Any], now: dt.datetime | None = None
) -> StepResult:
    """At the end of its lifetime: tear down (onExpiry=delete) or cut all access (retain)."""
    step = SandboxStep(platform, body, audit_condition=None)
    name, namespace, _ = object_meta(body)
    tenant = tenant_of(namespace) or "unknown"
    ns = sandbox_namespace(tenant, name)
    spec = SandboxSpec.model_validate(body.get("spec") or {})
    already = not step.was_true("Ready") and bool(
        step.previous_reasons() & {"Expired", "ExpiredRetained"}
    )
    if spec.lifetime.on_expiry == "retain":
        if owned_namespace(platform.api, ns, tenant, name)[0] is not None:
            quarantine(platform, ns, tenant, name)
            revoke_access(platform, ns)
        if not already:
            # The end is on record as for a deleted sandbox: its grants end and it expired
            # (its key and data stay until the Sandbox is deleted, recorded then).
            step.queue(revoke_all(platform, step.resource, step.previous.datasets, "expired"))
            step.log("sandbox.expired", "success", namespace=ns, onExpiry="retain")
            step.status.datasets = []
        reason, message = "ExpiredRetained", "lifetime ended; access cut, data kept until deletion"
    else:
        if not _teardown(step, "sandbox.expired"):
            return step.finish()
        reason, message = "Expired", "lifetime ended; namespace deleted and key destroyed"
    step.cond("Ready", False, reason, message)
    if not already:
        step.note("Normal", reason, message)
    return step.finish()
