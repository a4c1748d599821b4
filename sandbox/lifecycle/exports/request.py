"""The request side of an export: Submitted → PolicyChecked → InReview → Approved.

Each stage adds to the step (conditions, status, audit events) and says whether the
export may go on to the next one; nothing here touches the destination.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandbox.api.export import ReviewDecision
from sandbox.artifacts.outbox import ArtifactInfo, ArtifactNotFound, ExportStorageError, outbox_key
from sandbox.lifecycle.decisions import export_policy_status
from sandbox.lifecycle.exports.decision import (
    decide_export,
    destination_uri,
    engine_down,
    required_approvals,
    violations_text,
)
from sandbox.lifecycle.exports.review import Reviews
from sandbox.lifecycle.exports.run import ExportRun
from sandbox.lifecycle.objects import object_meta
from sandbox.provision.names import sandbox_id

__all__ = ["approvals", "check_policy", "reject_on_review", "submit"]


def submit(run: ExportRun) -> None:
    """Record the request once: who asked, for what, to where, and why."""
    step, spec = run.step, run.spec
    if step.was_true("Submitted"):
        return
    step.log(
        "model.export.submitted",
        "success",
        actor=run.requester,
        artifact=spec.artifact.path,
        type=spec.artifact.type.value,
        destination=destination_uri(spec),
        region=spec.destination.region,
        justification=spec.justification,
    )
    step.cond("Submitted", True, "Submitted", f"requested by {spec.requested_by}")


def reject_on_review(run: ExportRun, reviews: Reviews) -> bool:
    """Close the export on the first accepted rejection; whether it did.

    One accepted rejection closes the export at any stage before release, even before
    its artifact has reached the outbox.
    """
    rejection = reviews.first(ReviewDecision.reject, ReviewDecision.revoke)
    if rejection is None:
        return False
    comment = reviews.comment(rejection)
    message = f"rejected by {rejection.reviewer}: {comment or 'no comment'}"
    run.step.log(
        "model.export.rejected",
        "denied",
        actor=reviews.actor(rejection),
        review=rejection.name,
        reason=comment,
        requester=run.spec.requested_by,
    )
    run.step.cond("InReview", False, "Rejected", message)
    run.step.cond("Rejected", True, "RejectedByReviewer", message)
    run.step.note("Warning", "Rejected", message)
    return True


def check_policy(run: ExportRun, sandbox_obj: Mapping[str, Any] | None) -> bool:
    """PolicyChecked, once: the operator's own digest, then the ``model.export`` decision.

    Returns whether the export may go on to review.
    """
    step = run.step
    if step.was_true("PolicyChecked"):
        return True
    _, namespace, _ = object_meta(step.body)
    if sandbox_obj is None:
        message = f"no Sandbox {run.spec.sandbox!r} in {namespace}"
        step.cond("PolicyChecked", False, "SandboxNotFound", message)
        step.retry(30, message)
        return False
    info = _inspect(run)
    if info is None:
        return False
    objects = (run.tenant_obj, sandbox_obj, step.body)
    decision = decide_export(step.platform, run.store, objects, run.spec, info.sha256, None)
    step.status.policy = export_policy_status(decision)
    if not decision.allow:
        message = violations_text(decision)
        if engine_down(decision):
            step.cond("PolicyChecked", False, "PolicyEngineUnavailable", message)
            step.retry(15, message)
            return False
        step.log("model.export.denied", "denied", policy=decision, sha256=info.sha256)
        step.cond("PolicyChecked", False, "PolicyDenied", message)
        step.cond("Rejected", True, "PolicyDenied", message)
        step.note("Warning", "PolicyDenied", message)
        return False
    required = required_approvals(decision)
    step.status.sha256, step.status.size, step.status.etag = info.sha256, info.size, info.etag
    step.status.source = info.uri
    step.status.destination_uri = destination_uri(run.spec)
    step.status.required_approvals = required
    step.log(
        "model.export.policy-checked",
        "success",
        policy=decision,
        sha256=info.sha256,
        size=info.size,
        source=info.uri,
        required_approvals=required,
    )
    step.cond(
        "PolicyChecked",
        True,
        "PolicyAllowed",
        f"sha256 {info.sha256}; {required} distinct approval(s) required",
    )
    return True


def _inspect(run: ExportRun) -> ArtifactInfo | None:
    """The artifact in the sandbox's outbox, digested by the operator; None says why not."""
    step, spec, store = run.step, run.spec, run.store
    key = outbox_key(sandbox_id(run.tenant, spec.sandbox), spec.artifact.path)
    try:
        return store.inspect(store.settings.bucket, key)
    except ArtifactNotFound:
        message = (
            f"the artifact {spec.artifact.path!r} is not in the outbox of sandbox "
            f"{spec.sandbox} yet; write it there first"
        )
        step.cond("PolicyChecked", False, "ArtifactNotFound", message)
        step.retry(15, message)
    except ExportStorageError as exc:
        step.cond("PolicyChecked", False, "StorageUnavailable", str(exc))
        step.retry(30, str(exc))
    return None


def approvals(run: ExportRun, reviews: Reviews) -> list[str] | None:
    """InReview → Approved: the distinct approvers once there are enough, else None."""
    step = run.step
    required = step.status.required_approvals or 1
    approvers = sorted(
        {r.reviewer for r in reviews.counted if r.decision is ReviewDecision.approve}
    )
    step.status.approvals = approvers
    step.status.approval_count = len(approvers)
    if len(approvers) < required:
        step.cond(
            "InReview",
            True,
            "AwaitingApprovals",
            f"{len(approvers)} of {required} distinct approval(s); reviewers must hold the "
            "reviewer role and cannot be the requester",
        )
        return None
    if not step.was_true("Approved"):
        step.log(
            "model.export.approved",
            "success",
            approvers=approvers,
            requester=run.spec.requested_by,
            required_approvals=required,
        )
        by = f"approved by {', '.join(approvers)}"
        step.cond("InReview", False, "ReviewComplete", by)
        step.cond("Approved", True, "Approved", by)
    return approvers
