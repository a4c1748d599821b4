"""Policy inputs for the operator, built from live objects exactly as ``policy check`` does."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.lifecycle.platform import Platform
from sandbox.policy.manifests import Manifests, build_input
from sandbox.policy.model import AuditFacts, ClusterFacts, KeyFacts, PolicyInput

__all__ = ["cluster_facts", "provision_input"]


def cluster_facts(platform: Platform) -> ClusterFacts:
    """What the platform attests about the cluster, from the operator's settings."""
    return ClusterFacts(
        region=platform.cluster_region,
        jurisdiction=platform.cluster_jurisdiction,
        keys=KeyFacts(
            provider=platform.keys.name, region=platform.cluster_region, per_sandbox=True
        ),
        audit=AuditFacts(retention_days=platform.audit_retention_days),
    )


def provision_input(
    platform: Platform,
    tenant: Mapping[str, Any],
    sandbox: Mapping[str, Any],
    datasets: Sequence[Mapping[str, Any]],
    *,
    action: str = "sandbox.provision",
    now: dt.datetime | None = None,
) -> PolicyInput:
    """The policy input for ``action`` on a Sandbox, its Tenant and its Datasets."""
    manifests = Manifests()
    manifests.add(dict(tenant), "cluster")
    manifests.add(dict(sandbox), "cluster")
    for dataset in datasets:
        manifests.add(dict(dataset), "cluster")
    return build_input(manifests, cluster_facts(platform), action=action, now=now)
