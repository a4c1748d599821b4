"""A policy decision as the lifecycle records it: in an object's status and in the audit log."""

from __future__ import annotations

from typing import Any

from audit.entry import Decision as AuditDecision
from sandbox.policy.model import Decision

__all__ = ["audit_decision", "policy_status"]


def audit_decision(decision: Decision) -> AuditDecision:
    """The audit entry's ``decision``: allow, policy digest and violation codes."""
    return AuditDecision(
        allow=decision.allow,
        policy_digest=decision.policy_digest or None,
        codes=tuple(v.code for v in decision.violations),
    )


def policy_status(decision: Decision, *, with_warnings: bool) -> dict[str, Any]:
    """The ``status.policy`` block: allowed, digest, violations (and warnings)."""
    status: dict[str, Any] = {
        "allowed": decision.allow,
        "digest": decision.policy_digest,
        "violations": [
            {"code": v.code, "msg": v.msg, "regulation": v.regulation, "subject": v.subject}
            for v in decision.violations
        ],
    }
    if with_warnings:
        status["warnings"] = [
            {"code": w.code, "msg": w.msg, "regulation": w.regulation, "subject": w.subject}
            for w in decision.warnings
        ]
    return status
