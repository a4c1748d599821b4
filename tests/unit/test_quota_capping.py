"""A sandbox's quota is what it asks for, each resource capped by its tenant's ceiling."""

from __future__ import annotations

from sandbox.api.sandbox import SandboxSpec
from sandbox.api.tenant import TenantQuota
from sandbox.provision.sandbox_plan import effective_quota
from sandbox.testing import sandbox_manifest


def _spec(**resources: str) -> SandboxSpec:
    return SandboxSpec.model_validate(sandbox_manifest("s", "t", resources=resources)["spec"])


def test_each_resource_above_its_ceiling_is_capped_and_named() -> None:
    ceilings = TenantQuota.model_validate(
        {"cpu": "4", "memory": "8Gi", "storage": "100Gi", "gpu": "0"}
    )
    quota = effective_quota(_spec(cpu="8", memory="4Gi", storage="1Ti", gpu="1"), ceilings)
    assert (quota.cpu, quota.memory, quota.storage, quota.gpu) == ("4", "4Gi", "100Gi", "0")
    assert quota.capped == ("cpu", "gpu", "storage")


def test_units_are_compared_by_amount_not_text() -> None:
    ceilings = TenantQuota.model_validate({"cpu": "1500m", "memory": "1Gi"})
    quota = effective_quota(_spec(cpu="2", memory="1024Mi", storage="10Gi"), ceilings)
    assert (quota.cpu, quota.memory) == ("1500m", "1024Mi")  # 1024Mi is not above 1Gi
    assert quota.capped == ("cpu",)


def test_no_ceiling_means_no_cap() -> None:
    quota = effective_quota(_spec(cpu="64", memory="1Ti", storage="10Ti"), TenantQuota())
    assert (quota.cpu, quota.memory, quota.storage) == ("64", "1Ti", "10Ti")
    assert quota.capped == ()
