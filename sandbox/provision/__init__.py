"""Provisioning plans: the Kubernetes objects for tenants and sandboxes, as pure functions."""

from sandbox.provision.names import (
    managed_labels,
    sandbox_id,
    sandbox_namespace,
    tenant_namespace,
)
from sandbox.provision.sandbox_plan import (
    EffectiveQuota,
    IsolationSettings,
    effective_quota,
    isolation_objects,
    quarantine_policy,
)
from sandbox.provision.tenant_plan import tenant_objects

__all__ = [
    "EffectiveQuota",
    "IsolationSettings",
    "effective_quota",
    "isolation_objects",
    "managed_labels",
    "quarantine_policy",
    "sandbox_id",
    "sandbox_namespace",
    "tenant_namespace",
    "tenant_objects",
]
