"""What every stage of one ModelExport reconcile works on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audit.entry import Actor
from sandbox.api.export import ModelExportSpec, ModelExportStatus
from sandbox.api.tenant import TenantSpec
from sandbox.artifacts.outbox import ArtifactStore
from sandbox.lifecycle.step import Step

__all__ = ["ExportRun", "ExportStep"]

ExportStep = Step[ModelExportStatus]
"""A reconcile step of a ModelExport."""


@dataclass(frozen=True)
class ExportRun:
    """One reconcile of one ModelExport: its step, the outbox, and the objects it involves."""

    step: ExportStep
    """Status being built, and the audit events it must log first."""
    store: ArtifactStore
    """The outbox and the registered destinations."""
    tenant: str
    """The tenant whose home namespace holds the export."""
    tenant_obj: Mapping[str, Any]
    """The Tenant object (attested facts for policy)."""
    tenant_spec: TenantSpec
    """The Tenant's validated spec (who may review)."""
    spec: ModelExportSpec
    """The export's validated spec."""
    now: dt.datetime
    """The reconcile's clock."""

    @property
    def requester(self) -> Actor:
        """Who asked for the export (admission-verified)."""
        return Actor(user=self.spec.requested_by)
