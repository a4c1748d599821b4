"""Sandbox: an isolated, encrypted, policy-checked environment (namespaced, tenant members)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from sandbox.api.accelerators import AcceleratorCounts, gpu_once_rule, with_gpu
from sandbox.api.meta import Condition, Duration, HandledStatus, Quantity, WireModel
from sandbox.api.transfers import Transfer

__all__ = [
    "DatasetGrant",
    "DatasetRequest",
    "EgressRule",
    "Lifetime",
    "PolicyOutcome",
    "PublicInterest",
    "SandboxResources",
    "SandboxSpec",
    "SandboxStatus",
    "Violation",
]


class Lifetime(WireModel):
    """When the sandbox ends: a ttl from creation or a fixed instant (exactly one)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.ttl) != has(self.expiresAt)",
                    "message": "set exactly one of lifetime.ttl or lifetime.expiresAt",
                }
            ]
        }
    )

    ttl: Duration | None = None
    """Lifetime from creation, e.g. ``30d``."""
    expires_at: dt.datetime | None = None
    """Fixed end instant (RFC 3339)."""
    on_expiry: Literal["delete", "retain"] = "delete"
    """delete: tear down and destroy the key at expiry; retain: cut access, keep until deleted."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Lifetime:
        if (self.ttl is None) == (self.expires_at is None):
            raise ValueError("lifetime needs exactly one of ttl or expiresAt")
        return self


class SandboxResources(WireModel):
    """Compute and storage the sandbox may use; capped by the tenant's ceilings."""

    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [gpu_once_rule(zero_is_unset=True)]}
    )

    cpu: Quantity = "4"
    """Total CPU requests and limits, e.g. ``8``."""
    memory: Quantity = "16Gi"
    """Total memory, e.g. ``32Gi``."""
    gpu: Quantity = "0"
    """Whole GPUs: the shorthand for ``accelerators: {nvidia.com/gpu: N}``."""
    accelerators: AcceleratorCounts = Field(default_factory=dict)
    """Accelerators by resource name, e.g. ``{nvidia.com/mig-3g.40gb: 2, amd.com/gpu: 1}``;
    each must be one the platform offers. Every offered accelerator not asked for is 0."""
    storage: Quantity = "50Gi"
    """Size of the encrypted ``workspace`` volume."""

    @model_validator(mode="after")
    def _gpu_once(self) -> SandboxResources:
        self.accelerator_counts()
        return self

    def accelerator_counts(self) -> dict[str, int]:
        """Every accelerator asked for, ``gpu`` included as ``nvidia.com/gpu``, by name."""
        return with_gpu(self.gpu, self.accelerators, zero_is_unset=True)


class DatasetRequest(WireModel):
    """A dataset the sandbox asks to read, and why."""

    name: str = Field(min_length=1, max_length=253)
    """Name of a Dataset object."""
    purpose: str = Field(min_length=1)
    """Purpose of the processing; must be one of the dataset's allowed purposes."""


class EgressRule(WireModel):
    """A destination workloads may reach beyond DNS and the dataset gateway."""

    cidr: str = Field(min_length=1)
    """IPv4 or IPv6 CIDR, e.g. ``198.51.100.0/24``."""
    ports: list[int] = Field(default_factory=list)
    """TCP ports; empty means all."""
    region: str | None = None
    """Region id of the destination from the policy region catalogue."""
    description: str = ""
    """Why the destination is needed."""
    transfer: Transfer | None = None
    """For a destination outside the EEA and adequacy countries in a sandbox holding
    special-category data: the transfer relied on; the Tenant must carry the same
    transfer among its attested ``transfers``."""


class PublicInterest(WireModel):
    """What a sandbox relying on AI Act Art. 59 states about personal-data processing.

    Set it to rely on Art. 59 (any sector); a public-sector sandbox processing personal
    data must. Policy then requires every statement below, non-blank.
    """

    area: str | None = None
    """Public-interest area, Art. 59(1)(a) (e.g. ``public-health``)."""
    why_not_anonymised: str | None = None
    """Why the processing is necessary: anonymised or synthetic data will not do, Art. 59(1)(b)."""
    monitoring: str | None = None
    """How high risks to the data subjects' rights are monitored and mitigated during the
    sandbox, Art. 59(1)(c)."""
    deletion: str | None = None
    """The commitment to delete the personal data when the participation ends or the
    retention period is over, Art. 59(1)(g) (``lifetime.onExpiry`` must be ``delete``)."""


class SandboxSpec(WireModel):
    """Desired state of a Sandbox: what the tenant claims and asks for."""

    purpose: str = Field(min_length=1)
    """Purpose of the processing (matched against dataset purposes and data permits)."""
    region: str = Field(min_length=1)
    """Region id where the sandbox must run; must be the cluster's region."""
    lifetime: Lifetime
    """When the sandbox and its key are destroyed."""
    resources: SandboxResources = Field(
        default_factory=SandboxResources, json_schema_extra={"default": {}}
    )
    """Quota for the sandbox namespace."""
    datasets: list[DatasetRequest] = Field(default_factory=list)
    """Datasets to be granted."""
    egress: list[EgressRule] = Field(default_factory=list)
    """Extra egress destinations; empty by default."""
    public_interest: PublicInterest | None = None
    """AI Act Art. 59 statements (public sector)."""


class Violation(WireModel):
    """A policy violation, as the decision reported it."""

    code: str
    """Stable code, e.g. ``RESIDENCY_DATASET_OUTSIDE_EEA``."""
    msg: str
    """What is wrong, for a person."""
    regulation: str = ""
    """The rule enforced."""
    subject: str = ""
    """What the violation is about, e.g. ``dataset/claims-2024``."""


class PolicyOutcome(WireModel):
    """The last policy decision for the sandbox."""

    allowed: bool
    """Whether the decision allowed the action."""
    digest: str = ""
    """Digest of the policy set that decided."""
    violations: list[Violation] = Field(default_factory=list)
    """Why not, if denied."""
    warnings: list[Violation] = Field(default_factory=list)
    """Findings of SandboxPolicies in ``warn`` or ``dryrun`` mode."""


class DatasetGrant(WireModel):
    """Whether one requested dataset was granted."""

    name: str
    """Dataset name."""
    granted: bool
    """True when policy granted it."""
    violations: list[str] = Field(default_factory=list)
    """Violation codes when denied."""
    message: str = ""
    """Why not, for a person."""
    generation: int | None = None
    """The Dataset's ``metadata.generation`` the decision was made on."""


class SandboxStatus(HandledStatus):
    """Observed state of a Sandbox."""

    namespace: str | None = None
    """The sandbox namespace ``sbx-<tenant>-<name>``."""
    tenant: str | None = None
    """Owning tenant."""
    sector: str | None = None
    """The tenant's sector."""
    region: str | None = None
    """Region the sandbox runs in."""
    ready: str | None = None
    """Mirror of the Ready condition's status, for the printer column."""
    expires_at: dt.datetime | None = None
    """When the sandbox ends."""
    key_id: str | None = None
    """Identifier of the per-sandbox key (never key material)."""
    storage_class: str | None = None
    """Encrypted StorageClass of the workspace."""
    policy: PolicyOutcome | None = None
    """Last policy decision."""
    datasets: list[DatasetGrant] = Field(default_factory=list)
    """Per-dataset grant outcomes."""
    conditions: list[Condition] = Field(default_factory=list)
    """``Ready``, ``PolicyCompliant``, ``Isolated``, ``StorageEncrypted``."""
    observed_generation: int | None = None
    """Generation last reconciled."""
