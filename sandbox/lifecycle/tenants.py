"""The life of a Tenant: its home namespace and the RBAC of its members."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from audit.entry import Resource
from audit.errors import AuditError
from sandbox.api.conditions import set_condition
from sandbox.api.tenant import TenantSpec
from sandbox.kube.apply import apply
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.provision.names import tenant_namespace
from sandbox.provision.tenant_plan import tenant_objects

__all__ = ["reconcile_tenant"]


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
    owner = {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "Tenant",
        "name": name,
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    for obj in tenant_objects(name, spec):
        if obj["kind"] == "Namespace":
            obj["metadata"]["ownerReferences"] = [owner]
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
