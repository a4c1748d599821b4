"""The life of a Tenant: its home namespace and the RBAC of its members."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from audit.entry import Resource
from sandbox.api.tenant import TenantSpec, TenantStatus
from sandbox.kube.apply import apply, get
from sandbox.lifecycle.drift import holds
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.lifecycle.step import Step
from sandbox.provision.names import tenant_namespace
from sandbox.provision.tenant_plan import name_problem, tenant_objects

__all__ = ["correct_tenant_drift", "reconcile_tenant"]

_TenantStep = Step[TenantStatus]


def reconcile_tenant(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Apply the tenant's home namespace and RBAC; record changes in the audit log first."""
    name = str(body["metadata"]["name"])
    step = Step(platform, body, TenantStatus, Resource(kind="Tenant", name=name, tenant=name))
    spec = _validated(step)
    if spec is not None and _record_change(step, spec):
        _apply_home(step, spec)
    return step.finish()


def _validated(step: _TenantStep) -> TenantSpec | None:
    """The tenant's spec, or None with ``Ready=False/InvalidSpec`` (or ``InvalidName``)
    saying what to fix."""
    problem = name_problem(str(step.body["metadata"]["name"]))
    if problem is not None:
        step.cond("Ready", False, "InvalidName", f"recreate the Tenant: {problem}")
        step.status.observed_generation = step.generation
        return None
    try:
        return TenantSpec.model_validate(step.body.get("spec") or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        step.cond("Ready", False, "InvalidSpec", f"fix the spec: {problems}")
        step.status.observed_generation = step.generation
        return None


def _record_change(step: _TenantStep, spec: TenantSpec) -> bool:
    """Put a new generation's members on record before their access changes."""
    if step.previous.observed_generation != step.generation:
        step.log(
            "tenant.applied",
            "success",
            generation=step.generation,
            members=[f"{m.kind}:{m.name}={m.role.value}" for m in spec.members],
            sector=spec.sector.value,
        )
    return step.commit() is not None


def _apply_home(step: _TenantStep, spec: TenantSpec) -> None:
    """Apply the home namespace and the members' RBAC, and say so."""
    ns = tenant_namespace(str(step.body["metadata"]["name"]))
    for obj in _desired(step.body, spec):
        apply(step.platform.api, obj)
    step.cond("Ready", True, "HomeNamespaceReady", f"namespace {ns} and member RBAC applied")
    step.status.namespace = ns
    step.status.observed_generation = step.generation


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
    name = str(body["metadata"]["name"])
    if name_problem(name) is not None:
        return StepResult()
    resource = Resource(kind="Tenant", name=name, tenant=name)
    # The log being down must not flip a Ready tenant: a refusal is raised, kopf retries.
    step = Step(platform, body, TenantStatus, resource, audit_condition=None)
    corrected: list[str] = []
    for obj in _desired(body, spec):
        meta = obj["metadata"]
        live = get(platform.api, obj["kind"], meta["name"], meta.get("namespace"))
        if live is None or not holds(obj, live):
            apply(platform.api, obj)
            what = "recreated" if live is None else "restored"
            corrected.append(f"{obj['kind']}/{meta['name']} {what}")
    if corrected:
        step.log(
            "tenant.drift.corrected",
            "success",
            namespace=tenant_namespace(name),
            corrections=corrected,
        )
        step.note("Warning", "DriftCorrected", "; ".join(corrected))
    return step.finish()
