"""The life of a Sandbox: decide, provision, keep isolated, expire, tear down.

Each function takes the Sandbox object as the API server sent it and returns a
:class:`StepResult`; none of them holds state between calls, so a crash at any point
is recovered by calling the same function again (every write is a server-side apply
or an idempotent delete, and keys are created and destroyed idempotently).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from audit.entry import Resource
from audit.errors import AuditError
from sandbox.api.conditions import is_true, set_condition
from sandbox.api.meta import parse_duration, provider_region, rfc3339
from sandbox.api.sandbox import SandboxSpec
from sandbox.api.tenant import TenantSpec
from sandbox.errors import SandboxError
from sandbox.keys.base import KeyProviderError, KeyRef
from sandbox.kube.apply import (
    api_message,
    apply,
    create_or_apply,
    delete,
    get,
    list_objects,
)
from sandbox.kube.quota import (
    QuotaNotSettledError,
    counts_at_least,
    recount,
    usage_known,
    write_admitted,
)
from sandbox.lifecycle.decisions import audit_decision, policy_status
from sandbox.lifecycle.drift import holds
from sandbox.lifecycle.facts import provision_input
from sandbox.lifecycle.grants import evaluate_grants, grant_condition, grant_events, revoke_all
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.policy.model import Decision
from sandbox.provision.names import (
    managed_labels,
    sandbox_id,
    sandbox_namespace,
    tenant_namespace,
)
from sandbox.provision.sandbox_plan import (
    WORKLOAD_ROLE,
    effective_quota,
    isolation_objects,
    quarantine_policy,
    unoffered_accelerators,
)
from sandbox.storage.profiles import (
    StorageProfileError,
    assert_encrypted,
    storage_class_name,
    workspace_pvc,
)

__all__ = [
    "ANNOTATION_KEY_AUDITED",
    "correct_drift",
    "desired_objects",
    "expire_sandbox",
    "expires_at",
    "provision_sandbox",
    "quarantine",
    "refresh_grants",
    "teardown_sandbox",
]

ANNOTATION_KEY_AUDITED = "regsandbox.io/key-destruction-audited"
"""Set once ``key.destroyed`` is in the audit log, so a retry does not log it again."""

_TENANT_PREFIX = "tenant-"
_AUDIT_DOWN = (AuditError, OSError)
_ENGINE_CODES = ("POLICY_ENGINE_", "POLICY_DECISION_")


def _meta(body: Mapping[str, Any]) -> tuple[str, str, int]:
    meta = body["metadata"]
    return str(meta["name"]), str(meta["namespace"]), int(meta.get("generation") or 0)


def _conditions(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list((body.get("status") or {}).get("conditions") or [])


def _resource(body: Mapping[str, Any], tenant: str | None) -> Resource:
    name, namespace, _ = _meta(body)
    return Resource(kind="Sandbox", name=name, namespace=namespace, tenant=tenant, sandbox=name)


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def expires_at(body: Mapping[str, Any], spec: SandboxSpec) -> dt.datetime:
    """End of the sandbox: creation time plus ttl, or the fixed ``expiresAt``."""
    if spec.lifetime.expires_at is not None:
        return spec.lifetime.expires_at.astimezone(dt.UTC)
    created = _parse_time(str(body["metadata"]["creationTimestamp"]))
    try:
        return created + parse_duration(spec.lifetime.ttl or "0s")
    except OverflowError:
        # A ttl ending after year 9999 (the CRD bounds no number): it ends at the last
        # representable instant, which policy refuses (SANDBOX_LIFETIME_TOO_LONG).
        return dt.datetime.max.replace(tzinfo=dt.UTC)


def tenant_of(namespace: str) -> str | None:
    """The tenant whose home is ``namespace``, by naming convention."""
    if namespace.startswith(_TENANT_PREFIX) and len(namespace) > len(_TENANT_PREFIX):
        return namespace[len(_TENANT_PREFIX) :]
    return None


def _fail(
    body: Mapping[str, Any],
    conds: list[dict[str, Any]],
    reason: str,
    message: str,
    *,
    retry: float | None = None,
    policy: dict[str, Any] | None = None,
) -> StepResult:
    """Ready=False with a reason a person can act on; nothing is provisioned."""
    _, _, gen = _meta(body)
    conds = set_condition(conds, "Ready", False, reason, message, generation=gen)
    status: dict[str, Any] = {"conditions": conds, "ready": "False", "observedGeneration": gen}
    if policy is not None:
        status["policy"] = policy
    result = StepResult(status=status)
    result.note("Warning", reason, message)
    if retry is not None:
        result.retry(retry, message)
    return result


def _load(
    platform: Platform, body: Mapping[str, Any]
) -> tuple[str, dict[str, Any], TenantSpec, SandboxSpec] | StepResult:
    """Find the tenant and validate both specs, or explain why not."""
    _, namespace, _ = _meta(body)
    conds = _conditions(body)
    tenant = tenant_of(namespace)
    tenant_obj = platform.read("Tenant", tenant) if tenant else None
    if tenant is None or tenant_obj is None or tenant_namespace(tenant) != namespace:
        return _fail(
            body,
            conds,
            "TenantNotFound",
            f"namespace {namespace!r} is not the home namespace of any Tenant; create the "
            "Sandbox in tenant-<tenant name>, or ask a platform engineer to register the tenant",
            retry=30,
        )
    try:
        tenant_spec = TenantSpec.model_validate(tenant_obj.get("spec") or {})
        spec = SandboxSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _fail(body, conds, "InvalidSpec", f"fix the spec: {problems}")
    return tenant, tenant_obj, tenant_spec, spec


_APPLY_ORDER = {
    kind: rank
    for rank, kind in enumerate(
        (
            "Namespace",
            "StorageClass",
            "LimitRange",
            "NetworkPolicy",
            "ResourceQuota",
            "Secret",
            "PersistentVolumeClaim",
            "ServiceAccount",
            "RoleBinding",
        )
    )
}
"""The order a sandbox's objects are written in.

The members' RoleBinding comes last, so nobody can act in the namespace before its
isolation, limits and quota are in place. The ResourceQuota comes before the workspace
claim: a claim written first is never charged by quota admission, only counted later
from the quota controller's cache, which can miss it and leave the namespace's one
permitted claim (and its storage) free for minutes. The NetworkPolicies and Secrets
between the two give the quota controller time to compute the quota's usage, so that
admission charges the claim; the drift check recounts a quota that still missed it
(see :mod:`sandbox.kube.quota`). The LimitRange comes early so that admission of the
claim finds it without a live lookup.
"""
_APPLY_LATE = _APPLY_ORDER["ServiceAccount"]


class _WriteRefusedError(Exception):
    """The API server refused one of the sandbox's objects; says which, and why."""

    def __init__(self, obj: Mapping[str, Any], exc: ApiException) -> None:
        what = f"{obj['kind']} {obj['metadata']['name']}"
        super().__init__(f"the API server refused {what}: {api_message(exc)}")


_HALT_BEFORE = os.environ.get("REGSANDBOX_TEST_HALT_BEFORE", "")
"""Crash tests only: ``Kind:/path/to/marker`` makes a first provisioning stop for good
just before writing its first object of that kind, after creating the marker file, so
that a test can SIGKILL the operator at a known point. Unset in every real deployment."""


def _halt_here(kind: str) -> None:
    wanted, _, marker = _HALT_BEFORE.partition(":")
    if wanted == kind and marker:
        Path(marker).touch()
        threading.Event().wait()  # until the process is killed


def _write_all(api: ApiClient, objects: list[dict[str, Any]], *, first: bool) -> None:
    """Write a sandbox's objects in order: created on a first provisioning, else applied.

    A refusal on a first provisioning says which object was refused; while
    re-converging, the API error is raised as it is (the sandbox stays as it was).
    """
    write = create_or_apply if first else apply
    for obj in objects:
        if first and _HALT_BEFORE:
            _halt_here(obj["kind"])
        try:
            write_admitted(write, api, obj)
        except ApiException as exc:
            if not first:
                raise
            raise _WriteRefusedError(obj, exc) from exc


def desired_objects(
    platform: Platform,
    body: Mapping[str, Any],
    tenant: str,
    tenant_spec: TenantSpec,
    spec: SandboxSpec,
    key: KeyRef | None = None,
) -> list[dict[str, Any]]:
    """Every object of an allowed sandbox, in apply order (the key must exist)."""
    name, _, _ = _meta(body)
    sid = sandbox_id(tenant, name)
    ns = sandbox_namespace(tenant, name)
    quota = effective_quota(spec, tenant_spec.quota)
    objects = isolation_objects(
        name, tenant, tenant_spec, spec, quota, spec.egress, platform.isolation
    )
    key = key or platform.keys.get(sid)
    if key is None:
        raise KeyProviderError(f"sandbox {sid!r} has no key")
    data_key = None
    if getattr(platform.storage, "kind", "") == "longhorn":
        data_key = platform.keys.data_key(sid)  # type: ignore[attr-defined]
    storage = platform.storage.render(key, ns, data_key)
    assert_encrypted(storage.storage_class)
    objects.append(storage.storage_class)
    objects.extend(storage.secrets)
    objects.append(workspace_pvc(sid, ns, quota.storage, storage_class_name(sid)))
    # sorted() is stable: objects of one kind (the NetworkPolicies) keep their order.
    return sorted(objects, key=lambda obj: _APPLY_ORDER.get(obj["kind"], _APPLY_LATE))


def provision_sandbox(
    platform: Platform, body: Mapping[str, Any], now: dt.datetime | None = None
) -> StepResult:
    """Decide, then (if allowed) provision or re-converge the sandbox."""
    now = now or dt.datetime.now(dt.UTC)
    loaded = _load(platform, body)
    if isinstance(loaded, StepResult):
        return loaded
    tenant, tenant_obj, tenant_spec, spec = loaded
    name, _, gen = _meta(body)
    conds = _conditions(body)
    resource = _resource(body, tenant)
    end = expires_at(body, spec)
    base_status: dict[str, Any] = {
        "tenant": tenant,
        "sector": tenant_spec.sector.value,
        "region": spec.region,
        "expiresAt": rfc3339(end),
        "observedGeneration": gen,
    }
    created = _parse_time(str(body["metadata"]["creationTimestamp"]))
    maximum = tenant_spec.quota.max_lifetime
    if maximum and end - created > parse_duration(maximum):
        result = _fail(
            body,
            conds,
            "LifetimeExceedsTenantMaximum",
            f"the lifetime ends {rfc3339(end)}, beyond the tenant's maximum of {maximum} "
            "from creation; shorten spec.lifetime",
        )
        result.status.update(base_status)
        return result
    unoffered = unoffered_accelerators(spec, platform.isolation.accelerators)
    if unoffered:
        result = _fail(
            body,
            conds,
            "AcceleratorNotOffered",
            f"the platform offers no {', '.join(unoffered)}; remove it from "
            "spec.resources.accelerators, or ask a platform engineer to offer it",
        )
        result.status.update(base_status)
        return result
    if now >= end:
        return expire_sandbox(platform, body, now)

    datasets = [d for d in (platform.read("Dataset", r.name) for r in spec.datasets) if d]
    claimed = {
        **dict(body),
        "spec": {**dict(body["spec"]), "lifetime": {"expiresAt": rfc3339(end)}},
    }
    try:
        policy_input = provision_input(platform, tenant_obj, claimed, datasets, now=now)
    except (SandboxError, ValueError) as exc:  # an input that cannot be built is a deny
        decision = Decision.deny("POLICY_INPUT_INVALID", f"the policy input is invalid: {exc}")
    else:
        decision = platform.decide(policy_input)
    policy = policy_status(decision, with_warnings=True)
    if not decision.allow:
        engine_down = any(v.code.startswith(_ENGINE_CODES) for v in decision.violations)
        reason = "PolicyEngineUnavailable" if engine_down else "PolicyDenied"
        message = "; ".join(f"{v.code}: {v.msg}" for v in decision.violations)
        ns = sandbox_namespace(tenant, name)
        # A sandbox that already runs and is now denied (a policy changed) is cut off.
        # An unreachable engine is no verdict: a running sandbox is left as it is.
        provisioned = not engine_down and get(platform.api, "Namespace", ns) is not None
        if provisioned:
            reason = "NonCompliant"
            quarantine(platform, ns, tenant, name)
        conds = set_condition(conds, "PolicyCompliant", False, reason, message, generation=gen)
        grants: list[dict[str, Any]] = []
        if not engine_down:
            grants = evaluate_grants(platform, tenant_obj, body, spec, end, now)
            conds = grant_condition(conds, grants, gen)
        already_denied = (body.get("status") or {}).get("policy") == policy
        result = _fail(
            body, conds, reason, message, retry=15 if engine_down else None, policy=policy
        )
        result.status.update(base_status)
        if grants:
            # Shown for the person who fixes the spec; a sandbox that is not Ready
            # reads nothing, whatever its grants say.
            result.status["datasets"] = grants
        if provisioned and not already_denied:
            result.note("Warning", "Quarantined", f"all traffic of {ns} is cut: {message}")
        if not already_denied and not engine_down:
            try:
                platform.record(
                    "sandbox.quarantined" if provisioned else "sandbox.denied",
                    resource,
                    "denied",
                    decision=audit_decision(decision),
                )
            except _AUDIT_DOWN as exc:  # report and retry
                return result.retry(15, f"the audit log is unavailable: {exc}")
        return result

    warned = [w for w in decision.warnings if w.enforcement == "warn"]
    if warned:
        text = "; ".join(f"{w.code}: {w.msg} (SandboxPolicy {w.policy})" for w in warned)
        conds = set_condition(
            conds, "PolicyCompliant", True, "AllowedWithWarnings", text, generation=gen
        )
    else:
        conds = set_condition(conds, "PolicyCompliant", True, "PolicyAllowed", "", generation=gen)
    previous_digest = ((body.get("status") or {}).get("policy") or {}).get("digest")
    was_ready = is_true(conds, "Ready")
    sid = sandbox_id(tenant, name)
    ns = sandbox_namespace(tenant, name)
    if not was_ready:
        # Fail closed: nothing is created unless the log has taken the decision first.
        try:
            platform.record(
                "sandbox.provisioning", resource, "success", decision=audit_decision(decision)
            )
        except _AUDIT_DOWN as exc:
            message = f"the audit log is unavailable, nothing was provisioned: {exc}"
            result = _fail(body, conds, "AuditLogUnavailable", message, retry=15, policy=policy)
            result.status.update(base_status)
            return result
    try:
        # Region-catalogue ids are "provider:region"; key stores want the bare region.
        key = platform.keys.create(
            sid,
            provider_region(spec.region),
            {"regsandbox.io/tenant": tenant, "regsandbox.io/sandbox": name},
        )
        objects = desired_objects(platform, body, tenant, tenant_spec, spec, key)
        # A first provisioning creates (cheaper for the API server); a re-converge applies.
        first = not was_ready and not _was_quarantined(body)
        _write_all(platform.api, objects, first=first)
        if _was_quarantined(body):
            delete(platform.api, "NetworkPolicy", "quarantine", ns)
    except (KeyProviderError, StorageProfileError, _WriteRefusedError) as exc:
        result = _fail(body, conds, "ProvisioningFailed", str(exc), retry=30, policy=policy)
        result.status.update(base_status)
        return result

    grants = evaluate_grants(platform, tenant_obj, body, spec, end, now)
    conds = grant_condition(conds, grants, gen)
    previous_grants = list((body.get("status") or {}).get("datasets") or [])
    quota = effective_quota(spec, tenant_spec.quota)
    capped = (
        f"; quota capped by the tenant's ceilings for {', '.join(quota.capped)}"
        if quota.capped
        else ""
    )
    conds = set_condition(
        conds,
        "Isolated",
        True,
        "IsolationApplied",
        "restricted Pod Security, default-deny NetworkPolicies, quota and RBAC applied" + capped,
        generation=gen,
    )
    conds = set_condition(
        conds,
        "StorageEncrypted",
        True,
        "EncryptedStorageClass",
        f"workspace uses StorageClass {storage_class_name(sid)} encrypted with key {key.key_id}",
        generation=gen,
    )
    conds = set_condition(
        conds, "Ready", True, "Provisioned", f"namespace {ns} is ready", generation=gen
    )
    result = StepResult(
        status={
            **base_status,
            "namespace": ns,
            "keyId": key.key_id,
            "storageClass": storage_class_name(sid),
            "policy": policy,
            "datasets": grants,
            "conditions": conds,
            "ready": "True",
        }
    )
    # Grants become usable when this status is written: log them (and the provisioning)
    # first, as one durable batch.
    events = grant_events(platform, resource, previous_grants, grants, decision.policy_digest)
    if not was_ready:
        events.append(
            platform.event(
                "sandbox.provisioned",
                resource,
                "success",
                decision=audit_decision(decision),
                details={
                    "namespace": ns,
                    "keyId": key.key_id,
                    "storageClass": storage_class_name(sid),
                },
            )
        )
        result.note("Normal", "Provisioned", f"namespace {ns} provisioned with key {key.key_id}")
    if events:
        try:
            platform.record_many(events)
        except _AUDIT_DOWN as exc:
            return _fail(body, conds, "AuditLogUnavailable", f"not recorded: {exc}", retry=15)
    if warned and previous_digest != decision.policy_digest:
        result.note("Warning", "PolicyWarning", text)
    return result


def _was_quarantined(body: Mapping[str, Any]) -> bool:
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


def _revoke_access(platform: Platform, ns: str) -> None:
    delete(platform.api, "RoleBinding", WORKLOAD_ROLE, ns)


def teardown_sandbox(
    platform: Platform, body: Mapping[str, Any], *, action: str = "sandbox.deleted"
) -> StepResult:
    """Remove access, delete the namespace (and wait), destroy the key, record it all.

    Returns with ``retry_after`` while the namespace is still terminating.
    """
    name, namespace, _ = _meta(body)
    tenant = tenant_of(namespace) or "unknown"
    ns = sandbox_namespace(tenant, name)
    sid = sandbox_id(tenant, name)
    resource = _resource(body, tenant)
    result = StepResult()
    if get(platform.api, "Namespace", ns) is not None:
        _revoke_access(platform, ns)
        delete(platform.api, "Namespace", ns)
        if get(platform.api, "Namespace", ns) is not None:
            return result.retry(1.0, f"waiting for namespace {ns} to be deleted")
    delete(platform.api, "StorageClass", storage_class_name(sid))
    destruction = platform.keys.destroy(sid)
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    if ANNOTATION_KEY_AUDITED not in annotations:
        status = body.get("status") or {}
        # A retry (the log was down, or the operator died, after the key went) finds no
        # key: the entry still names the key this sandbox had, from its status.
        key_id = destruction.key_id or status.get("keyId")
        granted = list(status.get("datasets") or [])
        events = revoke_all(platform, resource, granted, action)
        destroyed = {
            "keyId": key_id,
            "provider": destruction.provider,
            "outcome": destruction.outcome,
        }
        events.append(platform.event("key.destroyed", resource, "success", details=destroyed))
        events.append(platform.event(action, resource, "success", details={"namespace": ns}))
        # One durable batch: a retry never logs the revocations twice.
        index = platform.record_many(events)[-2]
        result.status["datasets"] = []
        result.annotations[ANNOTATION_KEY_AUDITED] = str(index)
        result.note("Normal", "KeyDestroyed", f"key {key_id or '(none)'} {destruction.outcome}")
    return result


def expire_sandbox(
    platform: Platform, body: Mapping[str, Any], now: dt.datetime | None = None
) -> StepResult:
    """At the end of its lifetime: tear down (onExpiry=delete) or cut all access (retain)."""
    name, namespace, gen = _meta(body)
    tenant = tenant_of(namespace) or "unknown"
    ns = sandbox_namespace(tenant, name)
    conds = _conditions(body)
    spec = SandboxSpec.model_validate(body.get("spec") or {})
    if spec.lifetime.on_expiry == "retain":
        if get(platform.api, "Namespace", ns) is not None:
            quarantine(platform, ns, tenant, name)
            _revoke_access(platform, ns)
        result = StepResult()
        reason, message = "ExpiredRetained", "lifetime ended; access cut, data kept until deletion"
    else:
        result = teardown_sandbox(platform, body, action="sandbox.expired")
        if result.retry_after is not None:
            return result
        reason, message = "Expired", "lifetime ended; namespace deleted and key destroyed"
    already = not is_true(conds, "Ready") and any(
        c.get("reason") in ("Expired", "ExpiredRetained") for c in conds
    )
    conds = set_condition(conds, "Ready", False, reason, message, generation=gen)
    result.status.update({"conditions": conds, "ready": "False"})
    if not already:
        result.note("Normal", reason, message)
    return result


def _claim_uncounted(seen: Mapping[str, Mapping[str, Any] | None]) -> bool:
    """Whether the live quota has computed usage, yet counts no claim while the claim exists.

    Quota admission leaves a claim uncharged when it is created before the API server
    has seen the quota's usage computed; see :mod:`sandbox.kube.quota`.
    """
    quota, claim = seen.get("ResourceQuota"), seen.get("PersistentVolumeClaim")
    return (
        quota is not None
        and claim is not None
        and usage_known(quota)
        and not counts_at_least(quota, "persistentvolumeclaims", 1)
    )


_GUARDED_KINDS = ("NetworkPolicy", "Role", "RoleBinding")
"""Kinds whose extra objects in a sandbox namespace would weaken isolation."""


def correct_drift(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Re-apply every managed object of a Ready sandbox and remove foreign RBAC/policies.

    An object that was missing, or whose managed fields had been edited, is restored
    (server-side apply bumps its resourceVersion only when something changed); any
    NetworkPolicy, Role or RoleBinding the operator did not make is deleted. Each
    correction is recorded in the audit log and announced with a Warning event.
    """
    loaded = _load(platform, body)
    if isinstance(loaded, StepResult):
        return loaded
    tenant, tenant_obj, tenant_spec, spec = loaded
    name, _, _ = _meta(body)
    ns = sandbox_namespace(tenant, name)
    desired = desired_objects(platform, body, tenant, tenant_spec, spec)
    corrected: list[str] = []
    seen: dict[str, dict[str, Any] | None] = {}
    for obj in desired:
        meta = obj["metadata"]
        live = get(platform.api, obj["kind"], meta["name"], meta.get("namespace"))
        seen[obj["kind"]] = live
        if live is None:
            apply(platform.api, obj)
            corrected.append(f"{obj['kind']}/{meta['name']} recreated")
        elif not holds(obj, live):
            apply(platform.api, obj)
            corrected.append(f"{obj['kind']}/{meta['name']} restored")
    not_recounted = None
    if _claim_uncounted(seen):
        try:
            recount(platform.api, next(o for o in desired if o["kind"] == "ResourceQuota"))
            corrected.append("ResourceQuota/sandbox recounted: it counted no workspace claim")
        except QuotaNotSettledError as exc:  # tried again at the next check
            not_recounted = str(exc)
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    for kind in _GUARDED_KINDS:
        for live in list_objects(platform.api, kind, ns):
            live_name = live["metadata"]["name"]
            if (kind, live_name) not in wanted and delete(platform.api, kind, live_name, ns):
                corrected.append(f"{kind}/{live_name} removed")
    result = refresh_grants(platform, body, tenant_obj, spec)
    if not_recounted:
        result.note("Warning", "QuotaNotRecounted", not_recounted)
    if corrected:
        platform.record(
            "sandbox.drift.corrected",
            _resource(body, tenant),
            "success",
            details={"namespace": ns, "corrections": corrected},
        )
        result.note("Warning", "DriftCorrected", "; ".join(corrected))
    return result


def _datasets_changed(
    platform: Platform, spec: SandboxSpec, recorded: list[dict[str, Any]]
) -> bool:
    by_name = {o.get("name"): o for o in recorded}
    for request in spec.datasets:
        live = platform.read("Dataset", request.name)
        seen = by_name.get(request.name)
        live_generation = int(live["metadata"].get("generation") or 0) if live else None
        if seen is None or seen.get("generation") != live_generation:
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
    from the status the gateway reads.
    """
    status = body.get("status") or {}
    recorded = list(status.get("datasets") or [])
    result = StepResult()
    if not _datasets_changed(platform, spec, recorded):
        return result
    now = now or dt.datetime.now(dt.UTC)
    _, _, gen = _meta(body)
    tenant = str(tenant_obj["metadata"]["name"])
    grants = evaluate_grants(platform, tenant_obj, body, spec, expires_at(body, spec), now)
    changes = grant_events(
        platform, _resource(body, tenant), recorded, grants, platform.engine.policy_digest
    )
    if changes:
        platform.record_many(changes)
        revoked = [e.details["dataset"] for e in changes if e.action == "dataset.revoked"]
        if revoked:
            result.note(
                "Warning", "GrantRevoked", f"access revoked to {', '.join(map(str, revoked))}"
            )
    result.status["datasets"] = grants
    result.status["conditions"] = grant_condition(_conditions(body), grants, gen)
    return result
