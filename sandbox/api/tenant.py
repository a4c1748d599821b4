"""Tenant: an organisation admitted to the platform (cluster-scoped, platform engineers)."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from sandbox.api.accelerators import AcceleratorCounts, gpu_once_rule, with_gpu
from sandbox.api.meta import Condition, Duration, HandledStatus, Quantity, WireModel
from sandbox.api.transfers import AttestedTransfer

__all__ = [
    "ANONYMOUS_USER",
    "EVERYONE_GROUPS",
    "Attestations",
    "DataPermit",
    "Member",
    "Role",
    "Sector",
    "SpecialCategoryBasis",
    "TenantQuota",
    "TenantSpec",
    "TenantStatus",
]


class Sector(StrEnum):
    """The regulatory sector a tenant or dataset belongs to."""

    finance = "finance"
    health = "health"
    public = "public"
    space = "space"
    manufacturing = "manufacturing"
    research = "research"


class Role(StrEnum):
    """What a member may do in the tenant's home namespace."""

    owner = "owner"
    member = "member"
    reviewer = "reviewer"
    auditor = "auditor"


EVERYONE_GROUPS = ("system:authenticated", "system:unauthenticated", "system:serviceaccounts")
"""Groups Kubernetes puts every user, every anonymous request or every ServiceAccount in."""
ANONYMOUS_USER = "system:anonymous"
"""The user of a request without credentials."""
_EVERYONE = (
    "may not be everyone: the groups system:authenticated, system:unauthenticated and "
    "system:serviceaccounts hold every user, every anonymous caller and every ServiceAccount "
    "of the cluster, and system:anonymous is any caller without credentials; name the "
    "people, or a group of them"
)


class Member(WireModel):
    """A user or a group of the tenant, and its role (exactly one of user or group).

    A ServiceAccount is named as a user, ``system:serviceaccount:<namespace>:<name>``.
    A member may not be everyone (system:authenticated, system:unauthenticated,
    system:serviceaccounts, system:anonymous): that would open the tenant's audit
    entries, or its data, to the whole cluster.
    """

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.user) != has(self.group)",
                    "message": "set exactly one of user or group",
                },
                {
                    "rule": f"(!has(self.group) || !(self.group in {list(EVERYONE_GROUPS)!r}))"
                    f" && (!has(self.user) || self.user != {ANONYMOUS_USER!r})",
                    "message": f"a member {_EVERYONE}",
                },
            ]
        }
    )

    user: str | None = Field(default=None, min_length=1, max_length=253)
    """User name exactly as the API server authenticates it (certificate CN, OIDC claim)."""
    group: str | None = Field(default=None, min_length=1, max_length=253)
    """Group name exactly as the API server authenticates it."""
    role: Role
    """owner and member manage Sandboxes and ModelExports; reviewer manages ExportReviews;
    auditor reads the tenant's audit entries (with proofs) and nothing else."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Member:
        if (self.user is None) == (self.group is None):
            raise ValueError("a member needs exactly one of user or group")
        if self.group in EVERYONE_GROUPS or self.user == ANONYMOUS_USER:
            raise ValueError(f"member {self.name} {_EVERYONE}")
        return self

    @property
    def kind(self) -> Literal["User", "Group"]:
        """RBAC subject kind."""
        return "User" if self.user is not None else "Group"

    @property
    def name(self) -> str:
        """RBAC subject name."""
        return self.user or self.group or ""


class TenantQuota(WireModel):
    """Ceilings over all of the tenant's sandboxes; each sandbox's quota is capped by them."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [gpu_once_rule(zero_is_unset=False)]}
    )

    max_sandboxes: int | None = Field(default=None, ge=0)
    """How many sandboxes may exist at once."""
    cpu: Quantity | None = None
    """CPU ceiling per sandbox, e.g. ``16``."""
    memory: Quantity | None = None
    """Memory ceiling per sandbox, e.g. ``64Gi``."""
    gpu: Quantity | None = None
    """GPU ceiling per sandbox: the shorthand for ``accelerators: {nvidia.com/gpu: N}``."""
    accelerators: AcceleratorCounts = Field(default_factory=dict)
    """Ceilings per sandbox by accelerator, e.g. ``{nvidia.com/mig-3g.40gb: 2}``; an
    accelerator not named here (nor as ``gpu``) has no ceiling."""
    storage: Quantity | None = None
    """Workspace storage ceiling per sandbox, e.g. ``500Gi``."""
    max_lifetime: Duration | None = None
    """Longest lifetime a sandbox may ask for, e.g. ``90d``."""

    @model_validator(mode="after")
    def _gpu_once(self) -> TenantQuota:
        self.accelerator_ceilings()
        return self

    def accelerator_ceilings(self) -> dict[str, int]:
        """The ceiling of each accelerator that has one, ``gpu`` as ``nvidia.com/gpu``."""
        return with_gpu(self.gpu, self.accelerators, zero_is_unset=False)


class DataPermit(WireModel):
    """A health data permit from a health data access body (EHDS Art. 68).

    It names what it covers, and policy checks each sandbox against it: the datasets,
    the users or groups who may access them, the purposes and the validity.
    """

    id: str = Field(min_length=1)
    """Permit reference."""
    issued_by: str | None = None
    """The health data access body."""
    datasets: list[str] = Field(default_factory=list)
    """Names of the Datasets the permit covers; a sandbox may read personal health data
    only from these."""
    users: list[str] = Field(default_factory=list)
    """Users the permit names as data users."""
    groups: list[str] = Field(default_factory=list)
    """Groups the permit names as data users. Every tenant member with the owner or
    member role (who can reach sandbox data) must be named, as a user or as a group."""
    purposes: list[str] = Field(default_factory=list)
    """Purposes the permit covers; a sandbox's purpose must be one of them."""
    valid_from: dt.datetime | None = None
    """Start of the permit (RFC 3339); no sandbox is granted data before it."""
    valid_until: dt.datetime
    """End of the permit (RFC 3339); a sandbox may not outlive it."""


class SpecialCategoryBasis(WireModel):
    """The GDPR Art. 9(2) condition under which the tenant processes special-category data."""

    condition: Literal[
        "9(2)(a)",
        "9(2)(b)",
        "9(2)(c)",
        "9(2)(d)",
        "9(2)(e)",
        "9(2)(f)",
        "9(2)(g)",
        "9(2)(h)",
        "9(2)(i)",
        "9(2)(j)",
    ]
    """The Art. 9(2) point relied on, e.g. ``9(2)(j)`` (scientific research under Art. 89(1))."""
    reference: str = Field(min_length=1, max_length=1024)
    """What the condition rests on: the Union or national law, consent records, a decision."""


class Attestations(WireModel):
    """Facts the platform has verified about the tenant; the tenant cannot set these."""

    supervisory_authority: str | None = Field(default=None, min_length=1)
    """Financial supervisor that has the tenant on record, e.g. ``CSSF`` (finance)."""
    dpia_reference: str | None = Field(default=None, min_length=1)
    """Reference of the data protection impact assessment (GDPR Art. 35)."""
    ethics_approval: str | None = Field(default=None, min_length=1)
    """Reference of an ethics committee approval."""
    data_permit: DataPermit | None = None
    """Health data permit."""
    special_category_basis: SpecialCategoryBasis | None = None
    """GDPR Art. 9(2) basis for special-category data outside health (health data is read
    under the data permit)."""
    criminal_offence_authorisation: str | None = Field(default=None, min_length=1)
    """GDPR Art. 10: the official authority or the Union or Member State law that
    authorises processing criminal-offence data."""
    transfers: list[AttestedTransfer] = Field(default_factory=list)
    """Transfers to third countries the platform reviewed; a Sandbox egress entry may
    rely on one of them (same mechanism and reference)."""


class TenantSpec(WireModel):
    """Desired state of a Tenant."""

    organisation: str = Field(min_length=1, max_length=256)
    """Legal name of the organisation."""
    sector: Sector
    """Regulatory sector; selects the sector policies."""
    jurisdiction: str = Field(pattern=r"^[A-Z]{2}$")
    """ISO 3166-1 alpha-2 country whose law governs the tenant, e.g. ``LU``."""
    members: list[Member] = Field(default_factory=list)
    """Users and groups with their roles."""
    quota: TenantQuota = Field(default_factory=TenantQuota)
    """Ceilings for the tenant's sandboxes."""
    attestations: Attestations = Field(default_factory=Attestations)
    """Platform-verified facts used by policy."""


class TenantStatus(HandledStatus):
    """Observed state of a Tenant."""

    namespace: str | None = None
    """The tenant's home namespace."""
    conditions: list[Condition] = Field(default_factory=list)
    """``Ready``."""
    observed_generation: int | None = None
    """Generation last reconciled."""
