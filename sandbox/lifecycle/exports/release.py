"""The release side of an export: final decision, copy, digest, receipt — and revocation.

Fail closed: nothing is copied unless the log has taken the intent first, and a copy
whose ``released`` entry the log refuses is taken back. A revocation reduces exposure,
so it removes the released object first and logs right after.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sandbox.api.export import ReviewDecision
from sandbox.artifacts.outbox import (
    ArtifactChanged,
    ArtifactInfo,
    ArtifactNotFound,
    ExportStorageError,
)
from sandbox.lifecycle.decisions import export_policy_status
from sandbox.lifecycle.exports.decision import (
    decide_export,
    destination_key,
    engine_down,
    violations_text,
)
from sandbox.lifecycle.exports.review import Reviews
from sandbox.lifecycle.exports.run import ExportRun, ExportStep
from sandbox.lifecycle.step import AUDIT_DOWN

__all__ = ["after_release", "release"]


def release(run: ExportRun, sandbox_obj: Mapping[str, Any], approvers: list[str]) -> None:
    """Decide with the approvals, log the intent, copy, log the release, attach a receipt."""
    step = run.step
    sha = step.status.sha256 or ""
    objects = (run.tenant_obj, sandbox_obj, step.body)
    decision = decide_export(step.platform, run.store, objects, run.spec, sha, approvers)
    step.status.policy = export_policy_status(decision)
    if not decision.allow:
        message = violations_text(decision)
        if engine_down(decision):
            step.cond("Released", False, "PolicyEngineUnavailable", message)
            step.retry(15, message)
            return
        step.log("model.export.denied", "denied", policy=decision, approvers=approvers)
        step.cond("Released", False, "PolicyDenied", message)
        step.cond("Rejected", True, "PolicyDenied", message)
        return
    details = _details(run, approvers)
    step.log("model.export.releasing", "success", policy=decision, **details)
    if step.commit() is None:
        return
    copied = _copy(run, details)
    if copied is None:
        return
    version = copied.version_id
    step.log("model.export.released", "success", policy=decision, version=version, **details)
    indices = step.commit()
    if indices is None:
        _take_back(run, version)
        return
    _released(run, indices[-1], str(details["destination"]), sha)


def _source(run: ExportRun) -> ArtifactInfo:
    """The outbox object as it was checked (etag and digest pin the copy)."""
    status, bucket = run.step.status, run.store.settings.bucket
    source_uri = status.source or ""
    return ArtifactInfo(
        bucket=bucket,
        key=source_uri.removeprefix(f"s3://{bucket}/"),
        etag=status.etag or "",
        size=status.size or 0,
        sha256=status.sha256 or "",
    )


def _details(run: ExportRun, approvers: list[str]) -> dict[str, Any]:
    status, spec = run.step.status, run.spec
    return {
        "sha256": status.sha256 or "",
        "size": status.size or 0,
        "source": status.source or "",
        "destination": f"s3://{spec.destination.bucket}/{destination_key(spec)}",
        "region": spec.destination.region,
        "type": spec.artifact.type.value,
        "requester": spec.requested_by,
        "approvers": approvers,
    }


def _copy(run: ExportRun, details: dict[str, Any]) -> ArtifactInfo | None:
    """Copy the checked artifact to the destination; the copy, or None (says why)."""
    step, spec = run.step, run.spec
    metadata = {
        "regsandbox-export": f"{step.resource.namespace}/{step.resource.name}",
        "regsandbox-sha256": str(details["sha256"]),
    }
    try:
        copied = run.store.release(
            _source(run), spec.destination.bucket, destination_key(spec), metadata
        )
    except (ArtifactChanged, ArtifactNotFound) as exc:
        reason = "ArtifactChanged" if isinstance(exc, ArtifactChanged) else "ArtifactMissing"
        message = f"{exc}; submit a new export for the current artifact"
        step.log("model.export.release-failed", "failure", reason=reason, why=str(exc), **details)
        step.cond("Released", False, reason, message)
        step.cond("Rejected", True, reason, message)
        step.note("Warning", reason, message)
        return None
    except ExportStorageError as exc:
        step.cond("Released", False, "StorageUnavailable", str(exc))
        step.retry(30, str(exc))
        return None
    return copied


def _take_back(run: ExportRun, version: str | None) -> None:
    """Not on record, so not released: remove the copy again."""
    spec = run.spec
    try:
        run.store.remove(spec.destination.bucket, destination_key(spec), version)
    except ExportStorageError as exc:
        run.step.note("Warning", "RollbackFailed", str(exc))


def _released(run: ExportRun, index: int, destination: str, sha: str) -> None:
    step = run.step
    step.status.released_at = run.now.astimezone(dt.UTC).replace(microsecond=0)
    step.status.release_index = index
    step.status.destination_uri = destination
    step.cond("Released", True, "Released", f"{destination} sha256 {sha}")
    attach_receipt(step, index)
    step.note("Normal", "Released", f"released to {destination}")


def attach_receipt(step: ExportStep, index: int) -> None:
    """Keep the C2SP tlog-proof of the ``released`` entry in the status."""
    try:
        step.status.receipt = step.platform.audit.prove(index).decode()
    except AUDIT_DOWN as exc:
        step.retry(15, f"released; the receipt is not available yet: {exc}")


def after_release(run: ExportRun, reviews: Reviews) -> None:
    """Keep the receipt, and carry out a revocation by a reviewer."""
    step = run.step
    revoke = reviews.first(ReviewDecision.revoke)
    if revoke is None:
        index = step.status.release_index
        if not step.status.receipt and isinstance(index, int):
            attach_receipt(step, index)
        return
    comment = reviews.comment(revoke)
    uri = step.status.destination_uri or ""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        # Revocation reduces exposure, so it is done first and logged right after.
        run.store.remove(bucket, key)
    except ExportStorageError as exc:
        step.cond("Revoked", False, "StorageUnavailable", str(exc))
        step.retry(30, str(exc))
        return
    step.log(
        "model.export.revoked",
        "success",
        actor=reviews.actor(revoke),
        review=revoke.name,
        reason=comment,
        destination=uri,
        sha256=step.status.sha256,
        requester=run.spec.requested_by,
    )
    if step.commit() is None:
        return
    message = f"revoked by {revoke.reviewer}: {comment or 'no reason given'}; {uri} removed"
    step.status.revoked_by = revoke.reviewer
    step.status.revoked_reason = comment
    step.status.revoked_at = run.now.astimezone(dt.UTC).replace(microsecond=0)
    step.cond("Released", False, "Revoked", message)
    step.cond("Revoked", True, "RevokedByReviewer", message)
    step.note("Warning", "Revoked", message)
