"""One reconcile of a ModelExport, as a sequence of named stages over one step."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from audit.entry import Resource
from sandbox.api.conditions import is_true
from sandbox.api.export import ModelExportSpec, ModelExportStatus
from sandbox.api.tenant import TenantSpec
from sandbox.artifacts.outbox import ArtifactStore
from sandbox.kube.apply import get
from sandbox.lifecycle.exports.release import after_release, release
from sandbox.lifecycle.exports.request import approvals, check_policy, reject_on_review, submit
from sandbox.lifecycle.exports.review import judge_reviews
from sandbox.lifecycle.exports.run import ExportRun, ExportStep
from sandbox.lifecycle.objects import object_meta, problems, tenant_of
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.lifecycle.step import Step

__all__ = ["reconcile_export"]


def reconcile_export(
    platform: Platform,
    store: ArtifactStore,
    body: Mapping[str, Any],
    *,
    now: dt.datetime | None = None,
) -> StepResult:
    """Move a ModelExport as far along its lifecycle as it can go now."""
    conds = (body.get("status") or {}).get("conditions")
    if is_true(conds, "Rejected") or is_true(conds, "Revoked"):
        return StepResult()  # closed: nothing more happens to it
    step = _step(platform, body)
    run = _load(step, store, now or dt.datetime.now(dt.UTC))
    if run is not None:
        _advance(run)
    return step.finish()


def _step(platform: Platform, body: Mapping[str, Any]) -> ExportStep:
    """A step that writes the whole status back, marked with this generation and tenant."""
    name, namespace, _ = object_meta(body)
    tenant = tenant_of(namespace, exact=True)
    sandbox = str((body.get("spec") or {}).get("sandbox") or "") or None
    resource = Resource(
        kind="ModelExport", name=name, namespace=namespace, tenant=tenant, sandbox=sandbox
    )
    step = Step(platform, body, ModelExportStatus, resource, audit_condition="Released", carry=True)
    step.status.observed_generation = step.generation
    if tenant:
        step.status.tenant = tenant
    return step


def _load(step: ExportStep, store: ArtifactStore, now: dt.datetime) -> ExportRun | None:
    """The tenant and the validated specs, or None with a condition saying why not."""
    tenant = step.resource.tenant
    tenant_obj = get(step.platform.api, "Tenant", tenant) if tenant else None
    if tenant is None or tenant_obj is None:
        message = (
            f"namespace {step.resource.namespace!r} is not the home namespace of any Tenant; "
            "create the ModelExport in tenant-<tenant name>"
        )
        step.cond("Submitted", False, "TenantNotFound", message)
        step.retry(30, message)
        return None
    try:
        tenant_spec = TenantSpec.model_validate(tenant_obj.get("spec") or {})
        spec = ModelExportSpec.model_validate(step.body.get("spec") or {})
    except ValidationError as exc:
        step.cond("Submitted", False, "InvalidSpec", f"fix the spec: {problems(exc)}")
        step.cond("Rejected", True, "InvalidSpec", f"fix the spec: {problems(exc)}")
        return None
    return ExportRun(step, store, tenant, tenant_obj, tenant_spec, spec, now)


def _advance(run: ExportRun) -> None:
    """Submitted → reviews → (released: revocation) | rejection | policy → approvals → release."""
    step = run.step
    submit(run)
    reviews = judge_reviews(step, run.tenant_spec, run.spec.requested_by)
    if step.was_true("Released"):
        after_release(run, reviews)
        return
    if reject_on_review(run, reviews):
        return
    sandbox_obj = get(step.platform.api, "Sandbox", run.spec.sandbox, step.resource.namespace)
    if not check_policy(run, sandbox_obj):
        return
    approvers = approvals(run, reviews)
    if approvers is None or step.commit() is None:
        return
    if sandbox_obj is None:
        message = f"no Sandbox {run.spec.sandbox!r} in {step.resource.namespace}; nothing released"
        step.cond("Released", False, "SandboxNotFound", message)
        step.retry(30, message)
        return
    release(run, sandbox_obj, approvers)
