"""ModelExport and ExportReview: the airlock through which artifacts leave a sandbox.

A tenant member asks for an artifact in a sandbox's outbox to be released to a
destination (ModelExport); reviewers of the tenant approve, reject or later revoke it
(ExportReview). Who asked and who reviewed is checked by ValidatingAdmissionPolicies
(``spec.requestedBy`` and ``spec.reviewer`` must be the authenticated user), so the
operator can trust those fields. Specs are immutable after creation.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from pydantic import Field, field_validator
from pydantic.config import JsonDict

from sandbox.api.meta import Condition, HandledStatus, WireModel
from sandbox.api.sandbox import Violation

__all__ = [
    "EXPORT_CONDITIONS",
    "AnonymityClaim",
    "ArtifactType",
    "ExportArtifact",
    "ExportDestination",
    "ExportPolicyOutcome",
    "ExportReviewSpec",
    "ExportReviewStatus",
    "ModelExportSpec",
    "ModelExportStatus",
    "ReviewDecision",
    "ReviewRecord",
]

EXPORT_CONDITIONS = (
    "Submitted",
    "PolicyChecked",
    "InReview",
    "Approved",
    "Released",
    "Rejected",
    "Revoked",
)
"""The condition types of a ModelExport, in lifecycle order."""

_KEY_PATTERN = r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$"
_NO_DOTDOT: JsonDict = {
    "rule": "!self.matches('(^|/)[.][.]?(/|$)')",
    "message": "must not contain '.' or '..' path segments",
}


class ArtifactType(StrEnum):
    """What the artifact is; sector policies restrict some types."""

    model = "model"
    aggregate = "aggregate"
    other = "other"


def _safe_key(value: str) -> str:
    if any(part in (".", "..") for part in value.split("/")):
        raise ValueError("must not contain '.' or '..' path segments")
    return value


class ExportArtifact(WireModel):
    """The object to release, in the sandbox's outbox."""

    path: str = Field(
        min_length=1,
        max_length=900,
        pattern=_KEY_PATTERN,
        json_schema_extra={"x-kubernetes-validations": [_NO_DOTDOT]},
    )
    """Object key relative to the sandbox outbox (``<sandbox id>/outbox/``), e.g. ``model.onnx``."""
    type: ArtifactType = ArtifactType.model
    """``model``, ``aggregate`` (aggregated statistics) or ``other``."""

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        return _safe_key(value)


class ExportDestination(WireModel):
    """Where the artifact goes: a destination bucket registered by the platform."""

    bucket: str = Field(min_length=3, max_length=63)
    """Destination bucket; must be one the platform registered for exports."""
    key: str | None = Field(
        default=None,
        min_length=1,
        max_length=900,
        pattern=_KEY_PATTERN,
        json_schema_extra={"x-kubernetes-validations": [_NO_DOTDOT]},
    )
    """Full object key at the destination (default: ``prefix`` + the artifact's file name)."""
    prefix: str = Field(default="", max_length=900)
    """Key prefix at the destination, used when ``key`` is not set."""
    region: str = Field(min_length=1)
    """Region-catalogue id of the destination, e.g. ``aws:eu-central-1``; checked by policy
    and against the region the platform registered for the bucket."""
    endpoint: str | None = None
    """S3 endpoint; when set it must equal the one the platform registered for the bucket."""

    @field_validator("key")
    @classmethod
    def _check_key(cls, value: str | None) -> str | None:
        return None if value is None else _safe_key(value)


class AnonymityClaim(WireModel):
    """The requester's claim that the artifact is anonymous (no personal data, GDPR
    Recital 26), with the assessment it rests on; reviewers see it and approve or reject."""

    assessment_reference: str = Field(min_length=1, max_length=1024)
    """Reference of the anonymisation assessment (e.g. a membership-inference and
    extraction test report), for the reviewers and the audit log."""
    summary: str = Field(default="", max_length=4096)
    """What the assessment found, in a sentence or two."""


class ModelExportSpec(WireModel):
    """Desired state of a ModelExport: what the requester asks for (immutable)."""

    sandbox: str = Field(min_length=1, max_length=253)
    """Name of the Sandbox (same namespace) whose outbox holds the artifact."""
    artifact: ExportArtifact
    """The artifact to release."""
    destination: ExportDestination
    """Where to release it."""
    justification: str = Field(min_length=1, max_length=4096)
    """Why the artifact must leave the sandbox, for the reviewers."""
    requested_by: str = Field(min_length=1, max_length=253)
    """The requester; admission requires it to be the authenticated user who creates it."""
    anonymity: AnonymityClaim | None = None
    """Declare the artifact anonymous. Policy requires it (and its review) for an
    artifact derived from personal data going where that data may not go."""


class ReviewDecision(StrEnum):
    """What a reviewer decides."""

    approve = "approve"
    reject = "reject"
    revoke = "revoke"


class ExportReviewSpec(WireModel):
    """A reviewer's decision on a ModelExport (immutable)."""

    export: str = Field(min_length=1, max_length=253)
    """Name of the ModelExport (same namespace)."""
    decision: ReviewDecision
    """``approve`` or ``reject`` before release; ``revoke`` after release."""
    reviewer: str = Field(min_length=1, max_length=253)
    """The reviewer; admission requires it to be the authenticated user who creates it."""
    groups: list[str] = Field(default_factory=list, max_length=64)
    """Groups of the reviewer; admission requires each to be one of the user's groups, so
    a reviewer role granted to a group counts."""
    comment: str = Field(default="", max_length=4096)
    """Why (required in spirit for reject and revoke: it goes to the audit log)."""


class ReviewRecord(WireModel):
    """How the operator judged one ExportReview."""

    name: str
    """ExportReview name."""
    reviewer: str
    """Who reviewed."""
    decision: ReviewDecision
    """What they decided."""
    accepted: bool
    """Whether the review counts."""
    reason: str = ""
    """CamelCase reason when it does not count, e.g. ``SelfReview``, ``NotAReviewer``."""


class ExportPolicyOutcome(WireModel):
    """The last ``model.export`` decision."""

    allowed: bool
    """Whether the decision allowed the export."""
    digest: str = ""
    """Digest of the policy set that decided."""
    violations: list[Violation] = Field(default_factory=list)
    """Why not, if denied."""


class ModelExportStatus(WireModel):
    """Observed state of a ModelExport."""

    tenant: str | None = None
    """Owning tenant."""
    sha256: str | None = None
    """SHA-256 of the artifact, computed by the operator from the outbox object (hex)."""
    size: int | None = None
    """Artifact size in bytes."""
    etag: str | None = None
    """ETag of the outbox object the digest was computed from (pins the copy source)."""
    source: str | None = None
    """``s3://bucket/key`` of the artifact in the outbox."""
    destination_uri: str | None = None
    """``s3://bucket/key`` at the destination."""
    policy: ExportPolicyOutcome | None = None
    """Last policy decision."""
    required_approvals: int | None = None
    """Distinct approvals the policy requires (obligation ``EXPORT_REVIEWS_REQUIRED``)."""
    approvals: list[str] = Field(default_factory=list)
    """Distinct reviewers whose approval counts, sorted."""
    approval_count: int = 0
    """``len(approvals)``, for the printer column."""
    reviews: list[ReviewRecord] = Field(default_factory=list)
    """Every ExportReview seen, and whether it counts."""
    released_at: dt.datetime | None = None
    """When the artifact was released."""
    release_index: int | None = None
    """Index of the ``model.export.released`` entry in the audit log."""
    receipt: str | None = None
    """C2SP tlog-proof of the ``model.export.released`` entry (verify offline)."""
    revoked_by: str | None = None
    """Reviewer who revoked the release."""
    revoked_reason: str | None = None
    """Why it was revoked (the review's comment)."""
    revoked_at: dt.datetime | None = None
    """When the released object was removed."""
    conditions: list[Condition] = Field(default_factory=list)
    """``Submitted``, ``PolicyChecked``, ``InReview``, ``Approved``, ``Released``,
    ``Rejected``, ``Revoked``."""
    observed_generation: int | None = None
    """Generation last reconciled."""


class ExportReviewStatus(HandledStatus):
    """Observed state of an ExportReview."""

    conditions: list[Condition] = Field(default_factory=list)
    """``Accepted``: whether the review counts, and if not, why."""
    observed_generation: int | None = None
    """Generation last reconciled."""
