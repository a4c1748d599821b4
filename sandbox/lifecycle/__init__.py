"""Lifecycle of regsandbox objects, independent of the operator runtime (kopf)."""

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
from sandbox.lifecycle.tenants import correct_tenant_drift, reconcile_tenant

__all__ = [
    "EventNote",
    "Platform",
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
