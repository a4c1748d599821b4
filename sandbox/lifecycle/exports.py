"""The model export airlock: Submitted → PolicyChecked → InReview → Approved → Released.

A ModelExport leaves the airlock as Released (its artifact copied to a registered
destination, digest checked, receipt kept), Rejected (by policy, by any accepted
rejection, or because the artifact changed after it was checked), or — after release —
Revoked (a reviewer's ``revoke`` removes the released object).

:func:`reconcile_export` is level-triggered: every call looks at the export and all of
its ExportReviews and moves it as far as it can; calling it again changes nothing.
Every transition is appended to the audit log *before* the status that shows it is
written, with the identities involved (requester, reviewers, the operator); if the log
cannot take an entry, nothing is released (a copy already made is deleted again).

Identities come from the API server: admission policies make ``spec.requestedBy`` and
``spec.reviewer`` equal to the authenticated user and ``spec.groups`` a subset of the
user's groups, and specs immutable. The operator then checks what admission cannot:
the requester never reviews, reviewers hold the ``reviewer`` role on the Tenant, and a
review counts only for an export created before it.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from audit.entry import Actor, Event, Resource
from audit.errors import AuditError
from sandbox.api.conditions import find_condition, is_true, set_condition
from sandbox.api.export import (
    ExportReviewSpec,
    ModelExportSpec,
    ReviewDecision,
)
from sandbox.api.meta import API_GROUP, API_VERSION, ConditionStatus, rfc3339
from sandbox.api.tenant import Role, TenantSpec
from sandbox.errors import SandboxError
from sandbox.exports.outbox import (
    ArtifactChanged,
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactStore,
    ExportStorageError,
    outbox_key,
)
from sandbox.kube.apply import get
from sandbox.lifecycle.decisions import audit_decision, policy_status
from sandbox.lifecycle.facts import cluster_facts
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.policy.manifests import Manifests, build_input
from sandbox.policy.model import Decision, Violation
from sandbox.provision.names import sandbox_id, tenant_namespace

__all__ = [
    "CODE_DESTINATION_NOT_REGISTERED",
    "CODE_DESTINATION_REGION_MISMATCH",
    "ReviewVerdict",
    "judge_review",
    "list_reviews",
    "reconcile_export",
    "review_status",
]

CODE_DESTINATION_NOT_REGISTERED = "EXPORT_DESTINATION_NOT_REGISTERED"
"""The destination bucket is not one the platform registered for exports."""
CODE_DESTINATION_REGION_MISMATCH = "EXPORT_DESTINATION_REGION_MISMATCH"
"""The claimed destination region or endpoint differs from the registered one."""

_AUDIT_DOWN = (AuditError, OSError)
_TENANT_PREFIX = "tenant-"
_ENGINE_CODES = ("POLICY_ENGINE_", "POLICY_DECISION_")
_Outcome = Literal["success", "failure", "denied"]


# -- small helpers --------------------------------------------------------------------


def _meta(body: Mapping[str, Any]) -> tuple[str, str, int]:
    meta = body["metadata"]
    return str(meta["name"]), str(meta["namespace"]), int(meta.get("generation") or 0)


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def _tenant_of(namespace: str) -> str | None:
    if namespace.startswith(_TENANT_PREFIX) and len(namespace) > len(_TENANT_PREFIX):
        tenant = namespace[len(_TENANT_PREFIX) :]
        return tenant if tenant_namespace(tenant) == namespace else None
    return None


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def list_reviews(api: client.ApiClient, namespace: str, export: str) -> list[dict[str, Any]]:
    """Every ExportReview in ``namespace`` naming ``export``, oldest first."""
    found = client.CustomObjectsApi(api).list_namespaced_custom_object(
        API_GROUP, API_VERSION, namespace, "exportreviews"
    )
    items = [
        dict(item)
        for item in found.get("items", [])
        if (item.get("spec") or {}).get("export") == export
    ]
    items.sort(
        key=lambda r: (str(r["metadata"].get("creationTimestamp")), str(r["metadata"]["name"]))
    )
    return items


# -- reviews --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewVerdict:
    """Whether one review counts, and why not."""

    accepted: bool
    reason: str
    message: str


def judge_review(
    tenant: TenantSpec,
    export: Mapping[str, Any],
    review: Mapping[str, Any],
) -> ReviewVerdict:
    """Judge ``review`` of ``export``: who may review, and whether the decision applies now.

    The reviewer must hold the ``reviewer`` role on the tenant (as a user, or through
    one of the admission-verified ``spec.groups``), must not be the requester, and the
    review must be newer than the export (a review of a deleted export of the same name
    does not carry over). Before release ``approve``, ``reject`` and ``revoke`` (which
    then acts as a rejection) apply; after release only ``revoke`` does.
    """
    try:
        spec = ExportReviewSpec.model_validate(review.get("spec") or {})
    except ValidationError as exc:
        return ReviewVerdict(False, "InvalidSpec", f"fix the review: {_problems(exc)}")
    requester = str((export.get("spec") or {}).get("requestedBy") or "")
    if spec.reviewer == requester:
        return ReviewVerdict(
            False,
            "SelfReview",
            f"{spec.reviewer} requested this export and cannot review it (four-eyes principle)",
        )
    roles = {(m.kind, m.name) for m in tenant.members if m.role is Role.reviewer}
    if ("User", spec.reviewer) not in roles and not any(("Group", g) in roles for g in spec.groups):
        return ReviewVerdict(
            False,
            "NotAReviewer",
            f"{spec.reviewer} does not hold the reviewer role on the tenant",
        )
    created = _parse_time(review["metadata"].get("creationTimestamp"))
    export_created = _parse_time(export["metadata"].get("creationTimestamp"))
    if created and export_created and created < export_created:
        return ReviewVerdict(
            False, "StaleReview", "the review is older than the export; review it again"
        )
    conds = (export.get("status") or {}).get("conditions")
    if is_true(conds, "Released") and spec.decision is not ReviewDecision.revoke:
        return ReviewVerdict(
            False, "AlreadyReleased", "the export is released; only a revoke applies now"
        )
    if is_true(conds, "Rejected") or is_true(conds, "Revoked"):
        return ReviewVerdict(False, "AlreadyClosed", "the export is closed")
    return ReviewVerdict(True, "Counted", f"{spec.decision.value} by {spec.reviewer} counts")


def review_status(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Status of an ExportReview: ``Accepted`` says whether (and why not) it counts.

    The ModelExport's reconcile is the authority and the one that audits reviews; this
    only shows its verdict (or the same judgement, if the export has not seen it yet).
    """
    name, namespace, gen = _meta(body)
    conds = list((body.get("status") or {}).get("conditions") or [])
    export_name = str((body.get("spec") or {}).get("export") or "")
    export = _get_export(platform.api, namespace, export_name)
    tenant = _tenant_of(namespace)
    tenant_obj = get(platform.api, "Tenant", tenant) if tenant else None
    verdict: ReviewVerdict
    if export is None:
        verdict = ReviewVerdict(False, "ExportNotFound", f"no ModelExport {export_name!r} here")
    elif tenant_obj is None:
        verdict = ReviewVerdict(False, "TenantNotFound", f"{namespace} is no tenant's home")
    else:
        seen = {r.get("name"): r for r in (export.get("status") or {}).get("reviews") or []}
        if name in seen:
            record = seen[name]
            verdict = ReviewVerdict(
                bool(record.get("accepted")),
                str(record.get("reason") or "Counted"),
                "as recorded by the export",
            )
        else:
            try:
                tenant_spec = TenantSpec.model_validate(tenant_obj.get("spec") or {})
            except ValidationError as exc:
                verdict = ReviewVerdict(False, "TenantInvalid", _problems(exc))
            else:
                verdict = judge_review(tenant_spec, export, body)
    conds = set_condition(
        conds, "Accepted", verdict.accepted, verdict.reason, verdict.message, generation=gen
    )
    result = StepResult(status={"conditions": conds, "observedGeneration": gen})
    if not verdict.accepted:
        result.note("Warning", verdict.reason, verdict.message)
    return result


def _get_export(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    if not name:
        return None
    try:
        found = client.CustomObjectsApi(api).get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, "modelexports", name
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(found)


# -- the export -----------------------------------------------------------------------


class _Step:
    """The status being built for one reconcile, and the events it must log first."""

    def __init__(self, platform: Platform, body: Mapping[str, Any], tenant: str | None) -> None:
        name, namespace, gen = _meta(body)
        self.platform = platform
        self.body = body
        self.gen = gen
        self.previous: dict[str, Any] = dict(body.get("status") or {})
        self.status: dict[str, Any] = {**self.previous, "observedGeneration": gen}
        if tenant:
            self.status["tenant"] = tenant
        self.conds: list[dict[str, Any]] = list(self.previous.get("conditions") or [])
        self.events: list[Event] = []
        self.result = StepResult()
        # The status as of the last successful append: what may be shown if one fails.
        self.committed: tuple[dict[str, Any], list[dict[str, Any]]] = (
            dict(self.previous),
            list(self.conds),
        )
        sandbox = str((body.get("spec") or {}).get("sandbox") or "") or None
        self.resource = Resource(
            kind="ModelExport", name=name, namespace=namespace, tenant=tenant, sandbox=sandbox
        )

    def cond(
        self, type_: str, status: ConditionStatus | bool, reason: str, message: str = ""
    ) -> None:
        self.conds = set_condition(self.conds, type_, status, reason, message, generation=self.gen)

    def log(
        self,
        action: str,
        outcome: _Outcome,
        *,
        actor: Actor | None = None,
        policy: Decision | None = None,
        **details: Any,
    ) -> None:
        self.events.append(
            Event(
                actor=actor or self.platform.actor,
                action=action,
                resource=self.resource,
                outcome=outcome,
                decision=audit_decision(policy) if policy is not None else None,
                details={k: v for k, v in details.items() if v is not None},
            )
        )

    def flush(self) -> list[int] | None:
        """Append the queued events; None (and a retry) if the log cannot take them."""
        if not self.events:
            return []
        try:
            indices = self.platform.record_many(self.events)
        except _AUDIT_DOWN as exc:
            self.unlogged(exc)
            return None
        self.events = []
        self.committed = (dict(self.status), list(self.conds))
        return indices

    def unlogged(self, exc: Exception) -> None:
        """Go back to what is on record, and say why nothing more happened."""
        message = f"the audit log is unavailable, nothing more was done: {exc}"
        status, conds = self.committed
        self.events = []
        self.conds = set_condition(
            conds, "Released", False, "AuditLogUnavailable", message, generation=self.gen
        )
        self.status = dict(status)
        self.result.note("Warning", "AuditLogUnavailable", message)
        self.result.retry(15, message)

    def done(self) -> StepResult:
        """The step's result, with the conditions built so far."""
        self.status["conditions"] = self.conds
        self.result.status = self.status
        return self.result


def _required(decision: Decision) -> int:
    for obligation in decision.obligations:
        if obligation.code == "EXPORT_REVIEWS_REQUIRED":
            try:
                return max(1, int(obligation.value))
            except (TypeError, ValueError):
                return 1
    return 1


def _destination_key(spec: ModelExportSpec) -> str:
    if spec.destination.key:
        return spec.destination.key
    prefix = spec.destination.prefix
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix + posixpath.basename(spec.artifact.path)


def _deny(code: str, msg: str, subject: str) -> Decision:
    return Decision(
        allow=False,
        violations=[
            Violation(code=code, msg=msg, regulation="regsandbox export rules", subject=subject)
        ],
    )


def _decide(
    platform: Platform,
    store: ArtifactStore,
    tenant_obj: Mapping[str, Any],
    sandbox_obj: Mapping[str, Any],
    body: Mapping[str, Any],
    spec: ModelExportSpec,
    sha256: str | None,
    approvals: Sequence[str] | None,
) -> Decision:
    """The ``model.export`` decision, with the operator's own destination checks first."""
    name, _, _ = _meta(body)
    subject = f"export/{name}"
    registered = store.destination(spec.destination.bucket)
    if registered is None:
        return _deny(
            CODE_DESTINATION_NOT_REGISTERED,
            f"bucket {spec.destination.bucket!r} is not a registered export destination",
            subject,
        )
    if spec.destination.region != registered.region:
        return _deny(
            CODE_DESTINATION_REGION_MISMATCH,
            f"bucket {spec.destination.bucket!r} is registered in {registered.region!r}, "
            f"not {spec.destination.region!r}",
            subject,
        )
    endpoint = registered.endpoint or store.settings.endpoint
    if spec.destination.endpoint is not None and spec.destination.endpoint != endpoint:
        return _deny(
            CODE_DESTINATION_REGION_MISMATCH,
            f"bucket {spec.destination.bucket!r} is not served by {spec.destination.endpoint!r}",
            subject,
        )
    manifests = Manifests()
    manifests.add(dict(tenant_obj), "cluster")
    manifests.add(dict(sandbox_obj), "cluster")
    for request in (sandbox_obj.get("spec") or {}).get("datasets") or []:
        dataset = get(platform.api, "Dataset", str(request.get("name")))
        if dataset is not None:
            manifests.add(dataset, "cluster")
    manifests.add(
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "ModelExport",
            "metadata": {"name": name},
            "spec": {
                "sandbox": spec.sandbox,
                "artifact": {
                    "path": spec.artifact.path,
                    "kind": spec.artifact.type.value,
                    "sha256": sha256,
                },
                # The attested region of the registered bucket, not the claim.
                "destination": {
                    "region": registered.region,
                    "uri": f"s3://{spec.destination.bucket}/{_destination_key(spec)}",
                },
                "justification": spec.justification,
                "requester": spec.requested_by,
                "anonymity": spec.anonymity.wire() if spec.anonymity else None,
            },
            "status": {"approvals": list(approvals)} if approvals is not None else {},
        },
        "cluster",
    )
    try:
        policy_input = build_input(manifests, cluster_facts(platform), action="model.export")
    except (SandboxError, ValueError) as exc:
        return Decision.deny("POLICY_INPUT_INVALID", f"the policy input is invalid: {exc}")
    return platform.decide(policy_input)


def _reviewer(review: Mapping[str, Any]) -> Actor:
    spec = review.get("spec") or {}
    return Actor(user=str(spec.get("reviewer") or ""), groups=tuple(spec.get("groups") or ()))


def reconcile_export(
    platform: Platform,
    store: ArtifactStore,
    body: Mapping[str, Any],
    *,
    now: dt.datetime | None = None,
) -> StepResult:
    """Move a ModelExport as far along its lifecycle as it can go now."""
    now = now or dt.datetime.now(dt.UTC)
    name, namespace, _ = _meta(body)
    previous = dict(body.get("status") or {})
    conds = previous.get("conditions")
    if is_true(conds, "Rejected") or is_true(conds, "Revoked"):
        return StepResult()  # closed: nothing more happens to it
    tenant = _tenant_of(namespace)
    tenant_obj = get(platform.api, "Tenant", tenant) if tenant else None
    step = _Step(platform, body, tenant)
    if tenant is None or tenant_obj is None:
        message = (
            f"namespace {namespace!r} is not the home namespace of any Tenant; create the "
            "ModelExport in tenant-<tenant name>"
        )
        step.cond("Submitted", False, "TenantNotFound", message)
        step.result.retry(30, message)
        return step.done()
    try:
        tenant_spec = TenantSpec.model_validate(tenant_obj.get("spec") or {})
        spec = ModelExportSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        step.cond("Submitted", False, "InvalidSpec", f"fix the spec: {_problems(exc)}")
        step.cond("Rejected", True, "InvalidSpec", f"fix the spec: {_problems(exc)}")
        return step.done()
    requester = Actor(user=spec.requested_by)

    if find_condition(conds, "Submitted") is None or not is_true(conds, "Submitted"):
        step.log(
            "model.export.submitted",
            "success",
            actor=requester,
            artifact=spec.artifact.path,
            type=spec.artifact.type.value,
            destination=f"s3://{spec.destination.bucket}/{_destination_key(spec)}",
            region=spec.destination.region,
            justification=spec.justification,
        )
        step.cond("Submitted", True, "Submitted", f"requested by {spec.requested_by}")

    # Reviews: judged once each, in order; the verdict is kept in status.
    reviews = list_reviews(platform.api, namespace, name)
    seen = {str(r.get("name")): dict(r) for r in previous.get("reviews") or []}
    records: list[dict[str, Any]] = []
    by_name: dict[str, Mapping[str, Any]] = {}
    for review in reviews:
        rname = str(review["metadata"]["name"])
        by_name[rname] = review
        if rname in seen:
            records.append(seen[rname])
            continue
        verdict = judge_review(tenant_spec, body, review)
        rspec = review.get("spec") or {}
        record = {
            "name": rname,
            "reviewer": str(rspec.get("reviewer") or ""),
            "decision": str(rspec.get("decision") or ""),
            "accepted": verdict.accepted,
            "reason": "" if verdict.accepted else verdict.reason,
        }
        records.append(record)
        step.log(
            "model.export.reviewed" if verdict.accepted else "model.export.review-refused",
            "success" if verdict.accepted else "denied",
            actor=_reviewer(review),
            review=rname,
            decision=record["decision"],
            comment=str(rspec.get("comment") or ""),
            reason=None if verdict.accepted else verdict.reason,
            why=None if verdict.accepted else verdict.message,
            requester=spec.requested_by,
        )
        if not verdict.accepted:
            step.result.note("Warning", verdict.reason, f"review {rname}: {verdict.message}")
    step.status["reviews"] = records
    counted = [r for r in records if r["accepted"]]

    if is_true(conds, "Released"):
        return _after_release(step, store, spec, counted, by_name, now)
    # One accepted rejection closes the export at any stage before release, even before
    # its artifact has reached the outbox.
    rejection = next((r for r in counted if r["decision"] in ("reject", "revoke")), None)
    if rejection is not None:
        rejecting = by_name.get(str(rejection["name"])) or {}
        comment = str((rejecting.get("spec") or {}).get("comment") or "")
        message = f"rejected by {rejection['reviewer']}: {comment or 'no comment'}"
        step.log(
            "model.export.rejected",
            "denied",
            actor=_reviewer(rejecting),
            review=rejection["name"],
            reason=comment,
            requester=spec.requested_by,
        )
        step.cond("InReview", False, "Rejected", message)
        step.cond("Rejected", True, "RejectedByReviewer", message)
        step.result.note("Warning", "Rejected", message)
        return _flush_and_finish(step)

    # PolicyChecked: the operator's own digest, then the model.export decision.
    sandbox_obj = get(platform.api, "Sandbox", spec.sandbox, namespace)
    if not is_true(conds, "PolicyChecked"):
        if sandbox_obj is None:
            message = f"no Sandbox {spec.sandbox!r} in {namespace}"
            step.cond("PolicyChecked", False, "SandboxNotFound", message)
            step.result.retry(30, message)
            return _flush_and_finish(step)
        key = outbox_key(sandbox_id(tenant, spec.sandbox), spec.artifact.path)
        try:
            info = store.inspect(store.settings.bucket, key)
        except ArtifactNotFound:
            message = (
                f"the artifact {spec.artifact.path!r} is not in the outbox of sandbox "
                f"{spec.sandbox} yet; write it there first"
            )
            step.cond("PolicyChecked", False, "ArtifactNotFound", message)
            step.result.retry(15, message)
            return _flush_and_finish(step)
        except ExportStorageError as exc:
            step.cond("PolicyChecked", False, "StorageUnavailable", str(exc))
            step.result.retry(30, str(exc))
            return _flush_and_finish(step)
        decision = _decide(platform, store, tenant_obj, sandbox_obj, body, spec, info.sha256, None)
        step.status["policy"] = policy_status(decision, with_warnings=False)
        if not decision.allow:
            message = "; ".join(f"{v.code}: {v.msg}" for v in decision.violations)
            if any(v.code.startswith(_ENGINE_CODES) for v in decision.violations):
                step.cond("PolicyChecked", False, "PolicyEngineUnavailable", message)
                step.result.retry(15, message)
                return _flush_and_finish(step)
            step.log("model.export.denied", "denied", policy=decision, sha256=info.sha256)
            step.cond("PolicyChecked", False, "PolicyDenied", message)
            step.cond("Rejected", True, "PolicyDenied", message)
            step.result.note("Warning", "PolicyDenied", message)
            return _flush_and_finish(step)
        required = _required(decision)
        step.status.update(
            {
                "sha256": info.sha256,
                "size": info.size,
                "etag": info.etag,
                "source": info.uri,
                "destinationUri": f"s3://{spec.destination.bucket}/{_destination_key(spec)}",
                "requiredApprovals": required,
            }
        )
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

    # InReview → Approved, or Rejected.
    required = int(step.status.get("requiredApprovals") or 1)
    approvals = sorted({r["reviewer"] for r in counted if r["decision"] == "approve"})
    step.status["approvals"] = approvals
    step.status["approvalCount"] = len(approvals)
    if len(approvals) < required:
        step.cond(
            "InReview",
            True,
            "AwaitingApprovals",
            f"{len(approvals)} of {required} distinct approval(s); reviewers must hold the "
            "reviewer role and cannot be the requester",
        )
        return _flush_and_finish(step)
    if not is_true(conds, "Approved"):
        step.log(
            "model.export.approved",
            "success",
            approvers=approvals,
            requester=spec.requested_by,
            required_approvals=required,
        )
        step.cond("InReview", False, "ReviewComplete", f"approved by {', '.join(approvals)}")
        step.cond("Approved", True, "Approved", f"approved by {', '.join(approvals)}")
    if step.flush() is None:
        return step.done()
    if sandbox_obj is None:
        message = f"no Sandbox {spec.sandbox!r} in {namespace}; nothing released"
        step.cond("Released", False, "SandboxNotFound", message)
        step.result.retry(30, message)
        return step.done()
    return _release(step, store, tenant_obj, sandbox_obj, spec, approvals, now)


def _flush_and_finish(step: _Step) -> StepResult:
    step.flush()
    return step.done()


def _release(
    step: _Step,
    store: ArtifactStore,
    tenant_obj: Mapping[str, Any],
    sandbox_obj: Mapping[str, Any],
    spec: ModelExportSpec,
    approvals: list[str],
    now: dt.datetime,
) -> StepResult:
    """Final decision with the approvals, then copy, check the digest, log, prove."""
    platform, body = step.platform, step.body
    sha = str(step.status.get("sha256") or "")
    decision = _decide(platform, store, tenant_obj, sandbox_obj, body, spec, sha, approvals)
    step.status["policy"] = policy_status(decision, with_warnings=False)
    if not decision.allow:
        message = "; ".join(f"{v.code}: {v.msg}" for v in decision.violations)
        if any(v.code.startswith(_ENGINE_CODES) for v in decision.violations):
            step.cond("Released", False, "PolicyEngineUnavailable", message)
            step.result.retry(15, message)
            return step.done()
        step.log("model.export.denied", "denied", policy=decision, approvers=approvals)
        step.cond("Released", False, "PolicyDenied", message)
        step.cond("Rejected", True, "PolicyDenied", message)
        return _flush_and_finish(step)
    source_uri = str(step.status.get("source") or "")
    source_key = source_uri.removeprefix(f"s3://{store.settings.bucket}/")
    source = ArtifactInfo(
        bucket=store.settings.bucket,
        key=source_key,
        etag=str(step.status.get("etag") or ""),
        size=int(step.status.get("size") or 0),
        sha256=sha,
    )
    bucket, key = spec.destination.bucket, _destination_key(spec)
    destination = f"s3://{bucket}/{key}"
    details: dict[str, Any] = {
        "sha256": sha,
        "size": source.size,
        "source": source_uri,
        "destination": destination,
        "region": spec.destination.region,
        "type": spec.artifact.type.value,
        "requester": spec.requested_by,
        "approvers": approvals,
    }
    # Fail closed: nothing is copied unless the log has taken the intent first.
    step.log("model.export.releasing", "success", policy=decision, **details)
    if step.flush() is None:
        return step.done()
    metadata = {
        "regsandbox-export": f"{step.resource.namespace}/{step.resource.name}",
        "regsandbox-sha256": sha,
    }
    try:
        copied = store.release(source, bucket, key, metadata)
    except (ArtifactChanged, ArtifactNotFound) as exc:
        reason = "ArtifactChanged" if isinstance(exc, ArtifactChanged) else "ArtifactMissing"
        message = f"{exc}; submit a new export for the current artifact"
        step.log(
            "model.export.release-failed",
            "failure",
            reason=reason,
            why=str(exc),
            **details,
        )
        step.cond("Released", False, reason, message)
        step.cond("Rejected", True, reason, message)
        step.result.note("Warning", reason, message)
        return _flush_and_finish(step)
    except ExportStorageError as exc:
        step.cond("Released", False, "StorageUnavailable", str(exc))
        step.result.retry(30, str(exc))
        return step.done()
    step.log(
        "model.export.released",
        "success",
        policy=decision,
        version=copied.version_id,
        **details,
    )
    indices = step.flush()
    if indices is None:
        # Not on record, so not released: take the copy back.
        try:
            store.remove(bucket, key, copied.version_id)
        except ExportStorageError as exc:
            step.result.note("Warning", "RollbackFailed", str(exc))
        return step.done()
    index = indices[-1]
    step.status.update(
        {
            "releasedAt": rfc3339(now),
            "releaseIndex": index,
            "destinationUri": destination,
        }
    )
    step.cond("Released", True, "Released", f"{destination} sha256 {sha}")
    _attach_receipt(step, index)
    step.result.note("Normal", "Released", f"released to {destination}")
    return step.done()


def _attach_receipt(step: _Step, index: int) -> None:
    try:
        step.status["receipt"] = step.platform.audit.prove(index).decode()
    except _AUDIT_DOWN as exc:
        step.result.retry(15, f"released; the receipt is not available yet: {exc}")


def _after_release(
    step: _Step,
    store: ArtifactStore,
    spec: ModelExportSpec,
    counted: list[dict[str, Any]],
    by_name: Mapping[str, Mapping[str, Any]],
    now: dt.datetime,
) -> StepResult:
    """Keep the receipt, and carry out a revocation by a reviewer."""
    revoke = next((r for r in counted if r["decision"] == "revoke"), None)
    if revoke is None:
        index = step.status.get("releaseIndex")
        if not step.status.get("receipt") and isinstance(index, int):
            _attach_receipt(step, index)
        return _flush_and_finish(step)
    review = by_name.get(str(revoke["name"])) or {}
    comment = str((review.get("spec") or {}).get("comment") or "")
    uri = str(step.status.get("destinationUri") or "")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        # Revocation reduces exposure, so it is done first and logged right after.
        store.remove(bucket, key)
    except ExportStorageError as exc:
        step.cond("Revoked", False, "StorageUnavailable", str(exc))
        step.result.retry(30, str(exc))
        return _flush_and_finish(step)
    step.log(
        "model.export.revoked",
        "success",
        actor=_reviewer(review),
        review=revoke["name"],
        reason=comment,
        destination=uri,
        sha256=step.status.get("sha256"),
        requester=spec.requested_by,
    )
    if step.flush() is None:
        return step.done()
    message = f"revoked by {revoke['reviewer']}: {comment or 'no reason given'}; {uri} removed"
    step.status.update(
        {
            "revokedBy": revoke["reviewer"],
            "revokedReason": comment,
            "revokedAt": rfc3339(now),
        }
    )
    step.cond("Released", False, "Revoked", message)
    step.cond("Revoked", True, "RevokedByReviewer", message)
    step.result.note("Warning", "Revoked", message)
    return step.done()
