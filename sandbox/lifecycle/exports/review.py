"""Reviews of a ModelExport: who may review, and whether a decision counts now.

The ModelExport's reconcile is the authority: it judges each ExportReview once, keeps
the verdict in ``status.reviews`` and audits it. :func:`review_status` only shows that
verdict on the ExportReview (or the same judgement, if the export has not seen it yet).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from audit.entry import Actor, Resource
from sandbox.api.conditions import is_true
from sandbox.api.export import (
    ExportReviewSpec,
    ExportReviewStatus,
    ModelExportStatus,
    ReviewDecision,
    ReviewRecord,
)
from sandbox.api.meta import API_GROUP, API_VERSION
from sandbox.api.tenant import Role, TenantSpec
from sandbox.kube.apply import get
from sandbox.lifecycle.objects import object_meta, parse_time, problems, tenant_of
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.lifecycle.step import Step, read_status

__all__ = [
    "ReviewVerdict",
    "Reviews",
    "get_export",
    "judge_review",
    "judge_reviews",
    "list_reviews",
    "review_status",
    "reviewer",
]


@dataclass(frozen=True)
class ReviewVerdict:
    """Whether one review counts, and why not."""

    accepted: bool
    reason: str
    message: str


@dataclass
class Reviews:
    """Every review of one export as judged, and the ExportReview objects by name."""

    records: list[ReviewRecord] = field(default_factory=list)
    objects: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def counted(self) -> list[ReviewRecord]:
        """The reviews that count, oldest first."""
        return [r for r in self.records if r.accepted]

    def first(self, *decisions: ReviewDecision) -> ReviewRecord | None:
        """The oldest counted review with one of ``decisions``."""
        return next((r for r in self.counted if r.decision in decisions), None)

    def comment(self, record: ReviewRecord) -> str:
        """The comment of the ExportReview behind ``record``."""
        return str((self.objects.get(record.name, {}).get("spec") or {}).get("comment") or "")

    def actor(self, record: ReviewRecord) -> Actor:
        """The reviewer behind ``record``, as admission verified them."""
        return reviewer(self.objects.get(record.name) or {})


def reviewer(review: Mapping[str, Any]) -> Actor:
    """The reviewer of an ExportReview (user and groups, both verified by admission)."""
    spec = review.get("spec") or {}
    return Actor(user=str(spec.get("reviewer") or ""), groups=tuple(spec.get("groups") or ()))


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


def get_export(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The ModelExport ``name`` in ``namespace``, or None."""
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


def _created(obj: Mapping[str, Any]) -> dt.datetime | None:
    text = obj["metadata"].get("creationTimestamp")
    return parse_time(str(text)) if text else None


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
        return ReviewVerdict(False, "InvalidSpec", f"fix the review: {problems(exc)}")
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
    created, export_created = _created(review), _created(export)
    if created and export_created and created < export_created:
        return ReviewVerdict(
            False, "StaleReview", "the review is older than the export; review it again"
        )
    return _applies_now(export, spec)


def _applies_now(export: Mapping[str, Any], spec: ExportReviewSpec) -> ReviewVerdict:
    conds = (export.get("status") or {}).get("conditions")
    if is_true(conds, "Released") and spec.decision is not ReviewDecision.revoke:
        return ReviewVerdict(
            False, "AlreadyReleased", "the export is released; only a revoke applies now"
        )
    if is_true(conds, "Rejected") or is_true(conds, "Revoked"):
        return ReviewVerdict(False, "AlreadyClosed", "the export is closed")
    return ReviewVerdict(True, "Counted", f"{spec.decision.value} by {spec.reviewer} counts")


def judge_reviews(step: Step[ModelExportStatus], tenant: TenantSpec, requester: str) -> Reviews:
    """Judge every new review of the export once, in order; log each verdict.

    A verdict, once in ``status.reviews``, is kept: a review is judged as of when the
    export first saw it.
    """
    name, namespace, _ = object_meta(step.body)
    seen = {r.name: r for r in step.previous.reviews}
    reviews = Reviews()
    for review in list_reviews(step.platform.api, namespace, name):
        rname = str(review["metadata"]["name"])
        reviews.objects[rname] = review
        record = seen.get(rname)
        if record is None:
            record = _judge_new(step, tenant, review, requester)
        reviews.records.append(record)
    step.status.reviews = reviews.records
    return reviews


def _judge_new(
    step: Step[ModelExportStatus],
    tenant: TenantSpec,
    review: Mapping[str, Any],
    requester: str,
) -> ReviewRecord:
    rname = str(review["metadata"]["name"])
    verdict = judge_review(tenant, step.body, review)
    rspec = review.get("spec") or {}
    record = ReviewRecord(
        name=rname,
        reviewer=str(rspec.get("reviewer") or ""),
        decision=ReviewDecision(str(rspec.get("decision") or "")),
        accepted=verdict.accepted,
        reason="" if verdict.accepted else verdict.reason,
    )
    step.log(
        "model.export.reviewed" if verdict.accepted else "model.export.review-refused",
        "success" if verdict.accepted else "denied",
        actor=reviewer(review),
        review=rname,
        decision=record.decision.value,
        comment=str(rspec.get("comment") or ""),
        reason=None if verdict.accepted else verdict.reason,
        why=None if verdict.accepted else verdict.message,
        requester=requester,
    )
    if not verdict.accepted:
        step.note("Warning", verdict.reason, f"review {rname}: {verdict.message}")
    return record


def review_status(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Status of an ExportReview: ``Accepted`` says whether (and why not) it counts."""
    name, namespace, _ = object_meta(body)
    resource = Resource(
        kind="ExportReview", name=name, namespace=namespace, tenant=tenant_of(namespace)
    )
    step = Step(platform, body, ExportReviewStatus, resource, audit_condition="Accepted")
    verdict = _verdict(platform, body)
    step.cond("Accepted", verdict.accepted, verdict.reason, verdict.message)
    step.status.observed_generation = step.generation
    if not verdict.accepted:
        step.note("Warning", verdict.reason, verdict.message)
    return step.finish()


def _verdict(platform: Platform, body: Mapping[str, Any]) -> ReviewVerdict:
    """The export's recorded verdict on this review, or the same judgement now."""
    name, namespace, _ = object_meta(body)
    export_name = str((body.get("spec") or {}).get("export") or "")
    export = get_export(platform.api, namespace, export_name)
    tenant = tenant_of(namespace, exact=True)
    tenant_obj = get(platform.api, "Tenant", tenant) if tenant else None
    if export is None:
        return ReviewVerdict(False, "ExportNotFound", f"no ModelExport {export_name!r} here")
    if tenant_obj is None:
        return ReviewVerdict(False, "TenantNotFound", f"{namespace} is no tenant's home")
    seen = {r.name: r for r in read_status(ModelExportStatus, export).reviews}
    if name in seen:
        record = seen[name]
        return ReviewVerdict(
            record.accepted, record.reason or "Counted", "as recorded by the export"
        )
    try:
        tenant_spec = TenantSpec.model_validate(tenant_obj.get("spec") or {})
    except ValidationError as exc:
        return ReviewVerdict(False, "TenantInvalid", problems(exc))
    return judge_review(tenant_spec, export, body)
