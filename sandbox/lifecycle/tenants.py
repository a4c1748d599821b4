"""The life of a Tenant: its home namespace and the RBAC of its members."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from audit.entry import Resource
from audit.errors import AuditError
from sandbox.api.conditions import set_condition
from sandbox.api.tenant import TenantSpec
from sandbox.kube.apply import apply, get
from sandbox.lifecycle.drift import holds
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.provision.names import tenant_namespace
from sandbox.provision.tenant_plan import tenant_objects

__all__ = ["correct_tenant_drift", "reconcile_tenant"]


def reconcile_tenant(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Apply the tenant's home namespace and RBAC; record changes in the audit log first."""
    meta = body["metadata"]
    name, gen = str(meta["name"]), int(meta.get("generation") or 0)
    status = body.get("status") or {}
    conds = list(status.get("conditions") or [])
    try:
        spec = TenantSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        conds = set_condition(
            conds, "Ready", False, "InvalidSpec", f"fix the spec: {problems}", generation=gen
        )
        return StepResult(status={"conditions": conds, "observedGeneration": gen})
    ns = tenant_namespace(name)
    if status.get("observedGeneration") != gen:
        members = [f"{m.kind}:{m.name}={m.role.value}" for m in spec.members]
        try:
            platform.record(
                "tenant.applied",
                Resource(kind="Tenant", name=name, tenant=name),
                "success",
                details={"generation": gen, "members": members, "sector": spec.sector.value},
            )
        except (AuditError, OSError) as exc:
            message = f"the audit log is unavailable, tenant access not changed: {exc}"
            conds = set_condition(
                conds, "Ready", False, "AuditLogUnavailable", message, generation=gen
            )
            return StepResult(status={"conditions": conds}).retry(15, message)
    for obj in _desired(body, spec):
        apply(platform.api, obj)
    conds = set_condition(
        conds,
        "Ready",
        True,
        "HomeNamespaceReady",
        f"namespace {ns} and member RBAC applied",
        generation=gen,
    )
    return StepResult(status={"namespace": ns, "conditions": conds, "observedGeneration": gen})


def _desired(body: Mapping[str, Any], spec: TenantSpec) -> list[dict[str, Any]]:
    """The tenant's home namespace (owned by the Tenant) and its members' RoleBindings."""
    meta = body["metadata"]
    owner = {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "Tenant",
        "name": str(meta["name"]),
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    objects = tenant_objects(str(meta["name"]), spec)
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["ownerReferences"] = [owner]
    return objects


def correct_tenant_drift(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Restore a Ready tenant's home namespace and member RBAC if edited or deleted by hand.

    Each correction is recorded in the audit log (``tenant.drift.corrected``) and
    announced with a Warning event; an invalid spec is left to :func:`reconcile_tenant`.
    """
    try:
        spec = TenantSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return StepResult()
    corrected: list[str] = []
    for obj in _desired(body, spec):
        meta = obj["metadata"]
        live = get(platform.api, obj["kind"], meta["name"], meta.get("namespace"))
        if live is None or not holds(obj, live):
            apply(platform.api, obj)
            what = "recreated" if live is None else "restored"
            corrected.append(f"{obj['kind']}/{meta['name']} {what}")
    result = StepResult()
    if corrected:
        name = str(body["metadata"]["name"])
        platform.record(
            "tenant.drift.corrected",
            Resource(kind="Tenant", name=name, tenant=name),
            "success",
            details={"namespace": tenant_namespace(name), "corrections": corrected},
        )
        result.note("Warning", "DriftCorrected", "; ".join(corrected))
    return result
