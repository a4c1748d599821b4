"""A policy decision as the lifecycle records it: in an object's status and in the audit log."""

from __future__ import annotations

from collections.abc import Sequence

from audit.entry import DecisionRecord
from sandbox.api.export import ExportPolicyOutcome
from sandbox.api.sandbox import PolicyOutcome
from sandbox.api.sandbox import Violation as StatusViolation
from sandbox.policy.model import Decision, PolicyWarning, Violation

__all__ = ["audit_decision", "export_policy_status", "sandbox_policy_status"]


def audit_decision(decision: Decision) -> DecisionRecord:
    """The audit entry's ``decision``: allow, policy digest and violation codes."""
    return DecisionRecord(
        allow=decision.allow,
        policy_digest=decision.policy_digest or None,
        codes=tuple(v.code for v in decision.violations),
    )


def _findings(items: Sequence[Violation | PolicyWarning]) -> list[StatusViolation]:
    return [
        StatusViolation(code=v.code, msg=v.msg, regulation=v.regulation, subject=v.subject)
        for v in items
    ]


def sandbox_policy_status(decision: Decision) -> PolicyOutcome:
    """A Sandbox's ``status.policy``: allowed, digest, violations and warnings."""
    return PolicyOutcome(
        allowed=decision.allow,
        digest=decision.policy_digest,
        violations=_findings(decision.violations),
        warnings=_findings(decision.warnings),
    )


def export_policy_status(decision: Decision) -> ExportPolicyOutcome:
    """A ModelExport's ``status.policy``: allowed, digest, violations."""
    return ExportPolicyOutcome(
        allowed=decision.allow,
        digest=decision.policy_digest,
        violations=_findings(decision.violations),
    )
