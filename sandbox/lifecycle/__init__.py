"""Lifecycle of regsandbox objects, independent of the operator runtime (kopf).

Every reconcile builds its status in a :class:`~sandbox.lifecycle.step.Step`: the typed
status model from :mod:`sandbox.api`, its conditions, and the audit events that the
step's commit makes durable before the status is written.

Where each job lives: :mod:`.tenants` (home namespace and member RBAC),
:mod:`.sandboxes` (provision, desired objects, drift, grant refresh, teardown),
:mod:`.exports` (the airlock: request, review, release), :mod:`.policies`
(SandboxPolicies), :mod:`.policy_state` (the policy set in force, under one lock),
:mod:`.grants` (dataset grant decisions), :mod:`.platform` (what a reconcile needs).
"""

from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import EventNote, StepResult
from sandbox.lifecycle.sandboxes import (
    correct_drift,
    desired_objects,
    expire_sandbox,
    expires_at,
    provision_sandbox,
    teardown_sandbox,
)
from sandbox.lifecycle.step import Step
from sandbox.lifecycle.tenants import correct_tenant_drift, reconcile_tenant

__all__ = [
    "EventNote",
    "Platform",
    "Step",
    "StepResult",
    "correct_drift",
    "correct_tenant_drift",
    "desired_objects",
    "expire_sandbox",
    "expires_at",
    "provision_sandbox",
    "reconcile_tenant",
    "teardown_sandbox",
]
