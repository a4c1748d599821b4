"""The policy input and decision models.

Input fields (JSON names, camelCase as in the manifests). *Attested* parts come from
objects only the platform writes (Tenant, Dataset, cluster configuration, export
reviews); *claimed* parts come from what a tenant member wrote (Sandbox, ModelExport
spec), so a tenant cannot talk itself into a permission.

``action``
    ``sandbox.provision`` | ``dataset.grant`` | ``model.export``.
``now`` (attested: the platform's clock)
    When the decision is made (checks permit and adequacy validity).
``cluster`` (attested: operator configuration)
    ``region`` (region-catalogue id, e.g. ``onprem:lu-national-1``), ``jurisdiction``,
    ``keys.{provider, region, perSandbox}``, ``audit.retentionDays``.
``tenant`` (attested: Tenant)
    ``name`` (metadata.name), ``sector``, ``jurisdiction``, ``members[].{user | group,
    role}``, ``attestations.{supervisoryAuthority, dpiaReference, ethicsApproval,
    dataPermit.{id, datasets, users, groups, purposes, validFrom, validUntil},
    specialCategoryBasis.{condition, reference}, criminalOffenceAuthorisation,
    transfers[].{mechanism, reference, recipient, certified, country}}``.
``datasets[]`` (attested: Dataset objects the sandbox refers to)
    ``name``, ``sector``, ``jurisdiction``,
    ``location.{bucket, prefix, region, endpoint}``, ``identifiability`` (anonymous |
    pseudonymised | identified), ``category`` (ordinary | special-category |
    criminal-offence), ``personalData`` (deprecated; when given alone, identifiability
    and category are derived from it), ``allowedPurposes[]``, ``retention.{days}``,
    ``transfer.{mechanism, reference, recipient, certified}``,
    ``ictThirdParty.{registerReference, dataLocations}``.
``sandbox`` (claimed: Sandbox)
    ``name``, ``purpose``, ``region``, ``lifetime.{ttl, expiresAt, onExpiry}``
    plus ``lifetime.seconds`` (derived by the platform from ttl or expiresAt),
    ``resources.{cpu, memory, gpu, storage, accelerators}``, ``datasets[].{name, purpose}``,
    ``egress[].{cidr, ports, region, transfer}``, ``publicInterest.{area,
    whyNotAnonymised, monitoring, deletion}``.
``export`` (model.export only; ``artifact``, ``destination``, ``justification``
claimed from ModelExport, ``requester`` and ``approvals`` attested by the operator)
    ``name``, ``sandbox``, ``artifact.{path, kind, sha256}``,
    ``destination.{region, uri}``, ``justification``, ``requester``,
    ``anonymity.{assessmentReference, summary}``, ``approvals[]`` (absent until reviews
    exist).

Timestamps are normalised to UTC ``YYYY-MM-DDTHH:MM:SSZ`` so policies compare them
as strings (and so the embedded engine never has to parse them).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

from sandbox.api.dataset import LEGACY_PERSONAL_DATA
from sandbox.api.meta import duration_seconds, parse_duration

__all__ = [
    "ACTIONS",
    "MAX_SECONDS",
    "AnonymityClaim",
    "Artifact",
    "Attestations",
    "AuditFacts",
    "ClusterFacts",
    "DataPermit",
    "DatasetFacts",
    "DatasetLocation",
    "DatasetRequest",
    "Decision",
    "Destination",
    "EgressRule",
    "ExportRequest",
    "IctThirdParty",
    "KeyFacts",
    "Lifetime",
    "Member",
    "Obligation",
    "PersonalData",
    "PolicyInput",
    "PolicyWarning",
    "PublicInterest",
    "Resources",
    "Retention",
    "SandboxClaim",
    "SpecialCategoryBasis",
    "TenantFacts",
    "Timestamp",
    "Transfer",
    "Violation",
    "duration_seconds",
    "format_timestamp",
    "parse_duration",
]

ACTIONS: tuple[str, ...] = ("sandbox.provision", "dataset.grant", "model.export")
"""The actions a decision can be asked for."""

_TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).replace(microsecond=0)


def format_timestamp(value: datetime) -> str:
    """Format ``value`` the way policies see timestamps: UTC, ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _to_utc(value).strftime(_TIMESTAMP_FORMAT)


Timestamp = Annotated[
    datetime,
    AfterValidator(_to_utc),
    PlainSerializer(format_timestamp, return_type=str),
]
"""A datetime normalised to UTC seconds and serialised as ``YYYY-MM-DDTHH:MM:SSZ``."""

MAX_SECONDS = 2**53 - 1
"""The largest lifetime in seconds a policy input carries.

Both engines read JSON numbers as doubles at some point, which hold integers exactly
only up to 2**53; a longer lifetime (a ttl of billions of weeks) is sent capped at
this value. Any lifetime that long is refused by policy anyway (``SANDBOX_LIFETIME_TOO_LONG``).
"""


class _Model(BaseModel):
    """Base of every input model: camelCase JSON names.

    Unknown fields are ignored, so whole manifest specs (members, quotas, ...) can be
    validated; a misspelt field therefore reads as absent, which every policy treats
    as the stricter case.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
    )


class PersonalData(StrEnum):
    """Personal-data class of a dataset, least to most sensitive."""

    none = "none"
    anonymised = "anonymised"
    pseudonymised = "pseudonymised"
    personal = "personal"
    special_category = "special-category"


class KeyFacts(_Model):
    """Where the cluster's key provider keeps sandbox keys (attested)."""

    provider: str = "local"
    """Key provider name: ``local`` or ``aws-kms``."""
    region: str = ""
    """Region-catalogue id of the key store."""
    per_sandbox: bool = True
    """Whether every sandbox gets a key of its own."""


class AuditFacts(_Model):
    """How the platform's audit log is kept (attested)."""

    retention_days: int = Field(default=0, ge=0)
    """Days audit records are kept before they may be deleted."""


class ClusterFacts(_Model):
    """The cluster the sandbox would run on (attested by the operator)."""

    region: str
    """Region-catalogue id, e.g. ``onprem:lu-national-1``."""
    jurisdiction: str = ""
    """ISO 3166-1 alpha-2 country of the region."""
    keys: KeyFacts = KeyFacts()
    audit: AuditFacts = AuditFacts()


class DataPermit(_Model):
    """A data permit granted by a health data access body (attested)."""

    id: str
    datasets: list[str] = []
    users: list[str] = []
    groups: list[str] = []
    purposes: list[str] = []
    valid_from: Timestamp | None = None
    valid_until: Timestamp


class SpecialCategoryBasis(_Model):
    """The GDPR Art. 9(2) condition and its reference (attested)."""

    condition: str = ""
    reference: str = ""


class Transfer(_Model):
    """A declared transfer to a third country (Dataset, egress entry, or attested)."""

    mechanism: str = ""
    """``scc`` | ``bcr`` | ``dpf``."""
    reference: str = ""
    recipient: str = ""
    certified: bool = False
    country: str | None = None
    """Recipient's country; attested transfers only."""


class Attestations(_Model):
    """Facts about a tenant that the platform verified (Tenant spec.attestations)."""

    supervisory_authority: str | None = None
    dpia_reference: str | None = None
    ethics_approval: str | None = None
    data_permit: DataPermit | None = None
    special_category_basis: SpecialCategoryBasis | None = None
    criminal_offence_authorisation: str | None = None
    transfers: list[Transfer] | None = None


class Member(_Model):
    """A user or group of the tenant and its role (attested: Tenant)."""

    user: str | None = None
    group: str | None = None
    role: str = ""


class TenantFacts(_Model):
    """The tenant asking (attested: Tenant)."""

    name: str
    sector: str
    jurisdiction: str
    members: list[Member] = []
    attestations: Attestations = Attestations()


class DatasetLocation(_Model):
    """Where a dataset's objects are stored."""

    bucket: str = ""
    prefix: str = ""
    region: str = ""
    endpoint: str = ""


class Retention(_Model):
    """How long a dataset may be kept."""

    days: int | None = None


class IctThirdParty(_Model):
    """DORA register entry and contractual data locations of a dataset (attested)."""

    register_reference: str = ""
    data_locations: list[str] = []


_LEGACY = {old.value: (new[0].value, new[1].value) for old, new in LEGACY_PERSONAL_DATA.items()}


class DatasetFacts(_Model):
    """A registered dataset (attested: Dataset).

    ``identifiability`` and ``category`` are always present in the policy input: when a
    Dataset gives only the deprecated ``personalData``, they are derived from it (as
    :data:`sandbox.api.dataset.LEGACY_PERSONAL_DATA` documents); a Dataset that gives
    neither reads as identified ordinary personal data, the stricter case.
    """

    name: str
    sector: str = ""
    jurisdiction: str = ""
    location: DatasetLocation = DatasetLocation()
    identifiability: str = ""
    category: str = ""
    personal_data: PersonalData | None = None
    allowed_purposes: list[str] = []
    retention: Retention = Retention()
    transfer: Transfer | None = None
    ict_third_party: IctThirdParty | None = None

    @model_validator(mode="before")
    @classmethod
    def _classify(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        legacy = _LEGACY.get(str(data.get("personalData") or data.get("personal_data") or ""))
        identifiability, category = legacy or ("identified", "ordinary")
        return {
            "identifiability": identifiability,
            "category": category,
            **{k: v for k, v in data.items() if v is not None},
        }


class Lifetime(_Model):
    """How long a sandbox lives (claimed), with ``seconds`` derived by the platform."""

    ttl: str | None = None
    expires_at: Timestamp | None = None
    on_expiry: Literal["delete", "retain"] = "delete"
    seconds: int | None = None
    """Lifetime in seconds from the decision time; ``None`` when unbounded."""

    def resolved(self, now: datetime) -> Lifetime:
        """Return a copy with ``expiresAt`` and ``seconds`` computed relative to ``now``.

        A ``ttl`` wins over an explicit ``expiresAt`` when both are given; the earlier
        of the two ends would be stricter, but the CRD allows only one of them.

        A ttl that ends after the last representable instant (year 9999) resolves to
        no ``expiresAt`` and ``seconds`` capped at :data:`MAX_SECONDS`, which policy
        refuses; it never raises.
        """
        now = _to_utc(now)
        if self.ttl:
            seconds = min(duration_seconds(self.ttl), MAX_SECONDS)
            try:
                end: datetime | None = now + timedelta(seconds=seconds)
            except OverflowError:
                return self.model_copy(update={"expires_at": None, "seconds": seconds})
        else:
            end = self.expires_at
        if end is None:
            return self.model_copy(update={"seconds": None})
        seconds = max(0, int((end - now).total_seconds()))
        return self.model_copy(update={"expires_at": end, "seconds": seconds})


class Resources(_Model):
    """Compute, storage and accelerators a sandbox asks for (claimed).

    ``gpu`` counts whole NVIDIA GPUs however they were asked for (the ``gpu`` shorthand
    or ``accelerators["nvidia.com/gpu"]``), so a rule on ``gpu`` cannot be sidestepped.
    """

    cpu: str | None = None
    memory: str | None = None
    gpu: int | None = None
    storage: str | None = None
    accelerators: dict[str, int] = {}
    """Accelerators by extended resource name, e.g. ``{"nvidia.com/mig-3g.40gb": 2}``."""

    @model_validator(mode="before")
    @classmethod
    def _gpu_however_asked(cls, data: Any) -> Any:
        if isinstance(data, dict):
            named = (data.get("accelerators") or {}).get("nvidia.com/gpu")
            if named and not data.get("gpu"):
                return {**data, "gpu": named}
        return data


class DatasetRequest(_Model):
    """One dataset a sandbox asks for, and why (claimed)."""

    name: str
    purpose: str = ""


class EgressRule(_Model):
    """One entry of a sandbox's egress allow-list (claimed)."""

    cidr: str
    ports: list[int] = []
    region: str = ""
    """Region-catalogue id of the destination; unknown regions are denied."""
    transfer: Transfer | None = None


class PublicInterest(_Model):
    """AI Act Art. 59(1) statements of a sandbox relying on Art. 59 (claimed)."""

    area: str = ""
    why_not_anonymised: str = ""
    monitoring: str = ""
    deletion: str = ""


class SandboxClaim(_Model):
    """What the tenant asks for (claimed: Sandbox spec)."""

    name: str
    purpose: str = ""
    region: str = ""
    lifetime: Lifetime = Lifetime()
    resources: Resources = Resources()
    datasets: list[DatasetRequest] = []
    egress: list[EgressRule] = []
    public_interest: PublicInterest | None = None


class Artifact(_Model):
    """The object a model export wants to release."""

    path: str = ""
    kind: str = "model"
    """``model`` | ``aggregate`` | ``dataset`` | ``other``."""
    sha256: str | None = None


class Destination(_Model):
    """Where an exported artifact goes."""

    region: str = ""
    uri: str = ""


class AnonymityClaim(_Model):
    """The requester's claim that the exported artifact is anonymous (claimed)."""

    assessment_reference: str = ""
    summary: str = ""


class ExportRequest(_Model):
    """A model export (ModelExport spec plus operator-attested review state)."""

    name: str
    sandbox: str = ""
    artifact: Artifact = Artifact()
    destination: Destination = Destination()
    justification: str = ""
    requester: str = ""
    anonymity: AnonymityClaim | None = None
    approvals: list[str] | None = None
    """Distinct approving reviewers so far; ``None`` before any review exists."""


class PolicyInput(_Model):
    """The whole input document of a decision (``input`` in Rego)."""

    action: str
    now: Timestamp | None = None
    """When the decision is made (attested: the platform's clock)."""
    cluster: ClusterFacts
    tenant: TenantFacts
    datasets: list[DatasetFacts] = []
    sandbox: SandboxClaim
    export: ExportRequest | None = None

    def to_rego(self) -> dict[str, Any]:
        """The JSON document the engines receive: camelCase names, no ``null`` fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Violation(BaseModel):
    """One reason a decision denies."""

    model_config = ConfigDict(frozen=True)

    code: str
    msg: str
    regulation: str = ""
    subject: str = ""


class Obligation(BaseModel):
    """Something that must happen for an allowed action to stay compliant."""

    model_config = ConfigDict(frozen=True)

    code: str
    value: Any = None
    regulation: str = ""


class PolicyWarning(BaseModel):
    """A violation of a custom policy (SandboxPolicy) that does not deny.

    ``enforcement`` is ``warn`` (the operator raises a Warning event) or ``dryrun``
    (the operator only logs it); ``policy`` is the SandboxPolicy's name.
    """

    model_config = ConfigDict(frozen=True)

    code: str
    msg: str
    regulation: str = ""
    subject: str = ""
    policy: str
    enforcement: Literal["warn", "dryrun"]


class Decision(BaseModel):
    """The one decision shape of DESIGN.md, plus the warnings of custom policies.

    Violations, obligations and warnings are sorted, so two engines that agree
    produce equal decisions. Warnings never deny.
    """

    model_config = ConfigDict(frozen=True)

    allow: bool
    violations: list[Violation] = []
    obligations: list[Obligation] = []
    warnings: list[PolicyWarning] = []
    policy_digest: str = ""

    @classmethod
    def from_rego(cls, value: Any, policy_digest: str) -> Decision:
        """Build a decision from the value of ``data.main.decision``.

        ``allow`` is forced to false when any violation is present, whatever the
        policy said.

        Raises:
            pydantic.ValidationError: if ``value`` does not have the decision shape.
        """
        raw = _RegoDecision.model_validate(value)
        violations = sorted(raw.violations, key=lambda v: (v.code, v.subject, v.msg))
        obligations = sorted(raw.obligations, key=lambda o: (o.code, repr(o.value), o.regulation))
        warnings = sorted(
            raw.warnings, key=lambda w: (w.policy, w.enforcement, w.code, w.subject, w.msg)
        )
        return cls(
            allow=raw.allow and not violations,
            violations=violations,
            obligations=obligations,
            warnings=warnings,
            policy_digest=policy_digest,
        )

    @classmethod
    def deny(cls, code: str, msg: str, policy_digest: str = "") -> Decision:
        """A fail-closed deny carrying one violation that says why."""
        return cls(
            allow=False,
            violations=[Violation(code=code, msg=msg, regulation="regsandbox fail-closed rule")],
            policy_digest=policy_digest,
        )


class _RegoDecision(BaseModel):
    """Shape check of the raw decision returned by either engine."""

    model_config = ConfigDict(extra="forbid")

    allow: bool
    violations: list[Violation]
    obligations: list[Obligation]
    warnings: list[PolicyWarning] = []
