"""Everything a reconcile needs from the platform, gathered in one object."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any, Literal

from kubernetes import client

from audit.client import AuditSink
from audit.entry import Actor, DecisionRecord, Event, Resource
from sandbox.keys.base import KeyProvider
from sandbox.kube.apply import get
from sandbox.kube.cache import WatchedObjects
from sandbox.kube.versions import VersionIndex
from sandbox.lifecycle.policy_state import PolicyState
from sandbox.policy.engine import PolicyEngine
from sandbox.policy.model import Decision as PolicyDecision  # the engine's answer
from sandbox.policy.model import PolicyInput
from sandbox.policy.policyset import PolicySet
from sandbox.provision.sandbox_plan import IsolationSettings
from sandbox.storage.profiles import StorageProfile

__all__ = ["Platform"]


@dataclass
class Platform:
    """The operator's view of the platform: API access, policy, audit, keys, storage.

    It holds four kinds of things: wiring (API client, engine, audit sink, keys,
    storage), facts the platform attests to policy (region, jurisdiction, retention),
    a read cache of watched objects, and one piece of mutable state shared by handler
    threads, :attr:`policy_state`, which is changed only under its own lock.
    """

    api: client.ApiClient
    """Client acting as the operator's own identity."""
    engine: PolicyEngine
    """Policy engine with the active policy set."""
    audit: AuditSink
    """Where lifecycle events are recorded; a failing sink stops provisioning."""
    keys: KeyProvider
    """Per-sandbox keys."""
    storage: StorageProfile
    """Turns the sandbox key into an encrypted StorageClass (and key Secret, if any)."""
    cluster_region: str
    """Region-catalogue id of this cluster (attested by configuration)."""
    cluster_jurisdiction: str
    """Country of the cluster's region."""
    audit_retention_days: int = 3650
    """How long the platform keeps audit records (attested to policy)."""
    isolation: IsolationSettings = field(default_factory=IsolationSettings)
    """Where DNS and the dataset gateway live."""
    actor: Actor = field(
        default_factory=lambda: Actor(service_account="regsandbox-system:regsandbox-operator")
    )
    """Identity recorded in audit entries for what the operator does."""

    on_decision: Callable[[str, float], None] | None = None
    """Called with the action and the seconds each decision took (metrics)."""

    watched: dict[str, WatchedObjects] = field(default_factory=dict)
    """Cluster-scoped kinds the operator watches (Tenant, Dataset), read from the watch."""
    versions: VersionIndex | None = None
    """Versions of the sandboxes' objects, so a drift check reads only what changed
    (None: every check reads every object)."""

    policies: InitVar[PolicySet | None] = None
    """The policy set the engine should hold; loaded lazily when the engine was down."""
    base_policies: InitVar[PolicySet | None] = None
    """The built-in policies, to which SandboxPolicies are added."""
    policy_state: PolicyState = field(init=False)
    """The policy set in force and the SandboxPolicies in it: the one mutable state
    shared by handler threads, changed only under its lock."""

    def __post_init__(self, policies: PolicySet | None, base_policies: PolicySet | None) -> None:
        self.policy_state = PolicyState(base_policies, policies)

    def ensure_policies(self) -> None:
        """(Re)load the policy set in force into the engine if it does not hold it yet."""
        self.policy_state.ensure_loaded(self.engine)

    def read(self, kind: str, name: str) -> dict[str, Any] | None:
        """A cluster-scoped object: as last watched when :attr:`watched` has the kind,
        else (and for anything not seen lately) from the API server."""
        cache = self.watched.get(kind)
        if cache is None:
            return get(self.api, kind, name)
        return cache.read(self.api, name)

    def decide(self, policy_input: PolicyInput) -> PolicyDecision:
        """Ask the policy engine; the engine itself turns any failure into a deny."""
        self.ensure_policies()
        started = time.perf_counter()
        decision = self.engine.decide(policy_input)
        if self.on_decision is not None:
            self.on_decision(policy_input.action, time.perf_counter() - started)
        return decision

    def event(
        self,
        action: str,
        resource: Resource,
        outcome: Literal["success", "failure", "denied"],
        *,
        decision: DecisionRecord | None = None,
        details: dict[str, Any] | None = None,
    ) -> Event:
        """An audit event of the operator's own action (to record, alone or in a batch)."""
        return Event(
            actor=self.actor,
            action=action,
            resource=resource,
            outcome=outcome,
            decision=decision,
            details=details or {},
        )

    def record(
        self,
        action: str,
        resource: Resource,
        outcome: Literal["success", "failure", "denied"],
        *,
        decision: DecisionRecord | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Append one event durably and return its index; raises when the log cannot."""
        event = self.event(action, resource, outcome, decision=decision, details=details)
        return self.record_many([event])[0]

    def record_many(self, events: Sequence[Event]) -> list[int]:
        """Append a batch of events durably."""
        return self.audit.append(events)
