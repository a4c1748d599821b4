"""The registry of regsandbox API resources: names, scope, models and printer columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sandbox.api.dataset import DatasetSpec, DatasetStatus
from sandbox.api.export import (
    ExportReviewSpec,
    ExportReviewStatus,
    ModelExportSpec,
    ModelExportStatus,
)
from sandbox.api.meta import API_GROUP, API_VERSION, WireModel
from sandbox.api.sandbox import SandboxSpec, SandboxStatus
from sandbox.api.sandboxpolicy import SandboxPolicySpec, SandboxPolicyStatus
from sandbox.api.tenant import TenantSpec, TenantStatus

__all__ = ["RESOURCES", "PrinterColumn", "Resource", "resource"]


@dataclass(frozen=True)
class PrinterColumn:
    """An ``additionalPrinterColumns`` entry."""

    name: str
    json_path: str
    type: Literal["string", "integer", "date", "boolean", "number"] = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class Resource:
    """One custom resource kind."""

    kind: str
    plural: str
    scope: Literal["Namespaced", "Cluster"]
    spec: type[WireModel]
    status: type[WireModel]
    description: str
    short_names: tuple[str, ...] = ()
    columns: tuple[PrinterColumn, ...] = field(default=())

    @property
    def singular(self) -> str:
        """Lower-case kind."""
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        """``plural.group``."""
        return f"{self.plural}.{API_GROUP}"

    @property
    def api_version(self) -> str:
        """``group/version``."""
        return f"{API_GROUP}/{API_VERSION}"


def _ready(path: str = ".status.conditions[?(@.type=='Ready')].status") -> PrinterColumn:
    return PrinterColumn("Ready", path)


_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


def _cond(type_: str) -> str:
    return f".status.conditions[?(@.type=='{type_}')].status"


_EXPORTS = (
    Resource(
        kind="ModelExport",
        plural="modelexports",
        scope="Namespaced",
        spec=ModelExportSpec,
        status=ModelExportStatus,
        description="A reviewed, audited release of an artifact from a sandbox's outbox.",
        short_names=("mexp",),
        columns=(
            PrinterColumn("Sandbox", ".spec.sandbox"),
            PrinterColumn("Type", ".spec.artifact.type"),
            PrinterColumn("Approvals", ".status.approvalCount", "integer"),
            PrinterColumn("Required", ".status.requiredApprovals", "integer"),
            PrinterColumn("Approved", _cond("Approved")),
            PrinterColumn("Released", _cond("Released")),
            PrinterColumn("Rejected", _cond("Rejected")),
            PrinterColumn("Revoked", _cond("Revoked")),
            PrinterColumn("Requester", ".spec.requestedBy", priority=1),
            PrinterColumn("Destination", ".status.destinationUri", priority=1),
            PrinterColumn("Anonymity", ".spec.anonymity.assessmentReference", priority=1),
            PrinterColumn("SHA256", ".status.sha256", priority=1),
            _AGE,
        ),
    ),
    Resource(
        kind="ExportReview",
        plural="exportreviews",
        scope="Namespaced",
        spec=ExportReviewSpec,
        status=ExportReviewStatus,
        description="A reviewer's approve, reject or revoke decision on a ModelExport.",
        short_names=("xrev",),
        columns=(
            PrinterColumn("Export", ".spec.export"),
            PrinterColumn("Decision", ".spec.decision"),
            PrinterColumn("Reviewer", ".spec.reviewer"),
            PrinterColumn("Accepted", _cond("Accepted")),
            PrinterColumn("Reason", ".status.conditions[?(@.type=='Accepted')].reason", priority=1),
            _AGE,
        ),
    ),
)


RESOURCES: tuple[Resource, ...] = (
    Resource(
        kind="Tenant",
        plural="tenants",
        scope="Cluster",
        spec=TenantSpec,
        status=TenantStatus,
        description="An organisation admitted to the platform, with its members and attestations.",
        short_names=("sbxtnt",),  # not "tnt": Capsule's Tenant has it
        columns=(
            PrinterColumn("Organisation", ".spec.organisation"),
            PrinterColumn("Sector", ".spec.sector"),
            PrinterColumn("Jurisdiction", ".spec.jurisdiction"),
            PrinterColumn("Namespace", ".status.namespace", priority=1),
            _ready(),
            _AGE,
        ),
    ),
    Resource(
        kind="Sandbox",
        plural="sandboxes",
        scope="Namespaced",
        spec=SandboxSpec,
        status=SandboxStatus,
        description="An isolated, encrypted, policy-checked environment for regulated data.",
        short_names=("sbx",),
        columns=(
            PrinterColumn("Tenant", ".status.tenant"),
            PrinterColumn("Sector", ".status.sector"),
            PrinterColumn("Region", ".spec.region"),
            _ready(),
            # A string, not a date: kubectl prints dates as ages and future ones as <invalid>.
            PrinterColumn("Expires", ".status.expiresAt"),
            PrinterColumn("Namespace", ".status.namespace", priority=1),
            PrinterColumn("Purpose", ".spec.purpose", priority=1),
            _AGE,
        ),
    ),
    Resource(
        kind="Dataset",
        plural="datasets",
        scope="Cluster",
        spec=DatasetSpec,
        status=DatasetStatus,
        description="Regulated data in object storage, readable only through the gateway.",
        short_names=("sbxds",),  # not "ds": the DaemonSet's
        columns=(
            PrinterColumn("Sector", ".spec.sector"),
            PrinterColumn("Jurisdiction", ".spec.jurisdiction"),
            PrinterColumn("Region", ".spec.location.region"),
            PrinterColumn("Identifiability", ".spec.identifiability"),
            PrinterColumn("Category", ".spec.category"),
            PrinterColumn("Personal-Data", ".spec.personalData", priority=1),
            PrinterColumn("Bucket", ".spec.location.bucket", priority=1),
            _AGE,
        ),
    ),
    Resource(
        kind="SandboxPolicy",
        plural="sandboxpolicies",
        scope="Cluster",
        spec=SandboxPolicySpec,
        status=SandboxPolicyStatus,
        description="A Rego module evaluated with the built-in regsandbox policies.",
        short_names=("sbxpol",),
        columns=(
            PrinterColumn("Enforcement", ".spec.enforcement"),
            PrinterColumn("Accepted", ".status.conditions[?(@.type=='Accepted')].status"),
            PrinterColumn("Digest", ".status.digest", priority=1),
            _AGE,
        ),
    ),
    *_EXPORTS,
)
"""Every resource served by the regsandbox CRDs."""


def resource(kind: str) -> Resource:
    """Look a resource up by kind."""
    for res in RESOURCES:
        if res.kind == kind:
            return res
    raise KeyError(kind)
