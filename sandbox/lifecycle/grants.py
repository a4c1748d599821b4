"""Dataset grants: one ``dataset.grant`` decision per requested dataset.

The outcome goes to ``status.datasets`` (granted, or denied with violation codes) and
the ``DatasetsGranted`` condition; the dataset gateway reads exactly that. Every change
of a grant — granted, denied, revoked — is recorded in the audit log before the
status that the gateway trusts is written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from audit.entry import DecisionRecord, Event, Resource
from sandbox.api.conditions import set_condition
from sandbox.api.meta import rfc3339
from sandbox.api.sandbox import DatasetGrant, SandboxSpec
from sandbox.errors import SandboxError
from sandbox.lifecycle.facts import provision_input
from sandbox.lifecycle.platform import Platform
from sandbox.policy.model import Decision

__all__ = [
    "CODE_NOT_REGISTERED",
    "evaluate_grants",
    "grant_condition",
    "grant_events",
    "grant_verdict",
    "revoke_all",
]

CODE_NOT_REGISTERED = "DATASET_NOT_REGISTERED"
"""A requested dataset has no Dataset object."""


def evaluate_grants(
    platform: Platform,
    tenant: Mapping[str, Any],
    body: Mapping[str, Any],
    spec: SandboxSpec,
    end: dt.datetime,
    now: dt.datetime,
) -> list[DatasetGrant]:
    """The grant outcome of every dataset the sandbox asks for, in request order."""
    outcomes: list[DatasetGrant] = []
    for request in spec.datasets:
        dataset = platform.read("Dataset", request.name)
        if dataset is None:
            outcomes.append(
                DatasetGrant(
                    name=request.name,
                    granted=False,
                    violations=[CODE_NOT_REGISTERED],
                    message=f"no Dataset named {request.name!r} is registered",
                )
            )
            continue
        claimed = {
            **dict(body),
            "spec": {
                **dict(body["spec"]),
                "lifetime": {"expiresAt": rfc3339(end)},
                "datasets": [request.wire()],
            },
        }
        try:
            policy_input = provision_input(
                platform, tenant, claimed, [dataset], action="dataset.grant", now=now
            )
        except (SandboxError, ValueError) as exc:
            decision = Decision.deny("POLICY_INPUT_INVALID", f"the policy input is invalid: {exc}")
        else:
            decision = platform.decide(policy_input)
        outcomes.append(
            DatasetGrant(
                name=request.name,
                granted=decision.allow,
                violations=[v.code for v in decision.violations],
                message="; ".join(f"{v.code}: {v.msg}" for v in decision.violations),
                generation=int(dataset["metadata"].get("generation") or 0),
            )
        )
    return outcomes


def grant_verdict(outcomes: Sequence[DatasetGrant]) -> tuple[bool, str, str]:
    """``DatasetsGranted`` as (status, reason, message): True when every dataset is granted."""
    denied = [o for o in outcomes if not o.granted]
    if not denied:
        message = f"{len(outcomes)} dataset(s) granted" if outcomes else "no datasets requested"
        return True, "AllGranted", message
    return False, "GrantDenied", "; ".join(f"{o.name}: {o.message}" for o in denied)


def grant_condition(
    conds: list[dict[str, Any]], outcomes: Sequence[DatasetGrant], generation: int
) -> list[dict[str, Any]]:
    """The condition list with ``DatasetsGranted`` set (see :func:`grant_verdict`)."""
    status, reason, message = grant_verdict(outcomes)
    return set_condition(conds, "DatasetsGranted", status, reason, message, generation=generation)


def grant_events(
    platform: Platform,
    resource: Resource,
    before: Sequence[DatasetGrant],
    after: Sequence[DatasetGrant],
    policy_digest: str,
) -> list[Event]:
    """Audit events for every grant that changed between two ``status.datasets`` lists."""
    previous = {o.name: o for o in before}
    events = []
    for outcome in after:
        old = previous.pop(outcome.name, None)
        if old is not None and old.granted == outcome.granted:
            continue
        result: Literal["success", "denied"] = "success"
        if outcome.granted:
            action = "dataset.granted"
        elif old is not None and old.granted:
            action = "dataset.revoked"
        else:
            action, result = "dataset.denied", "denied"
        decision = DecisionRecord(
            allow=outcome.granted,
            policy_digest=policy_digest or None,
            codes=tuple(outcome.violations),
        )
        events.append(
            platform.event(
                action, resource, result, decision=decision, details={"dataset": outcome.name}
            )
        )
    for name, old in previous.items():  # no longer requested
        if old.granted:
            why = {"dataset": name, "why": "no longer requested"}
            events.append(platform.event("dataset.revoked", resource, "success", details=why))
    return events


def revoke_all(
    platform: Platform, resource: Resource, before: Sequence[DatasetGrant], why: str
) -> list[Event]:
    """Audit events revoking every granted dataset (the sandbox ends)."""
    return [
        platform.event(
            "dataset.revoked", resource, "success", details={"dataset": o.name, "why": why}
        )
        for o in before
        if o.granted
    ]
