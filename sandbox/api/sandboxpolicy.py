"""SandboxPolicy: a Rego module loaded into the policy engines (cluster-scoped)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from sandbox.api.meta import Condition, HandledStatus, WireModel
from sandbox.api.tenant import Sector

__all__ = ["AcceptedPolicy", "Enforcement", "SandboxPolicySpec", "SandboxPolicyStatus"]


class Enforcement(StrEnum):
    """What a violation of this policy does."""

    deny = "deny"
    warn = "warn"
    dryrun = "dryrun"


class SandboxPolicySpec(WireModel):
    """Desired state of a SandboxPolicy."""

    rego: str = Field(min_length=1)
    """A Rego v1 module; its package must be under ``policies.custom``."""
    data: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """Data document made available to the module."""
    enforcement: Enforcement = Enforcement.deny
    """deny blocks, warn records a Warning, dryrun only logs."""
    sectors: list[Sector] = Field(default_factory=list)
    """Sectors the policy applies to; empty means all."""


class AcceptedPolicy(WireModel):
    """The last version of a SandboxPolicy that was accepted."""

    generation: int
    """Generation of the object when this spec was accepted."""
    spec: SandboxPolicySpec
    """The accepted spec: it stays in force while later edits are refused."""


class SandboxPolicyStatus(HandledStatus):
    """Observed state of a SandboxPolicy."""

    accepted: AcceptedPolicy | None = None
    """The last accepted version; an invalid edit leaves it in force (fail closed)."""
    digest: str | None = None
    """Digest of the policy set in force after this module was last loaded."""
    conditions: list[Condition] = Field(default_factory=list)
    """``Accepted`` (compiled and active) with the compiler's message when not."""
    observed_generation: int | None = None
    """Generation last reconciled."""
