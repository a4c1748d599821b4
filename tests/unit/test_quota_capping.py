"""A sandbox's quota is what it asks for, each resource capped by its tenant's ceiling.

Accelerators are extended resources, and a ResourceQuota limits only the resources it
names (as ``requests.<name>``): the quota must name every accelerator the platform
offers, 0 unless granted, and ceilings apply type by type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from operators.settings import OperatorSettings
from sandbox.api.accelerators import DEFAULT_ACCELERATORS
from sandbox.api.sandbox import SandboxResources, SandboxSpec
from sandbox.api.tenant import TenantQuota, TenantSpec
from sandbox.policy.model import SandboxClaim
from sandbox.provision.sandbox_plan import (
    effective_quota,
    quota_hard,
    unoffered_accelerators,
)
from sandbox.testing import sandbox_manifest

MIG = "nvidia.com/mig-3g.40gb"


def _spec(**resources: Any) -> SandboxSpec:
    return SandboxSpec.model_validate(sandbox_manifest("s", "t", resources=resources)["spec"])


def test_each_resource_above_its_ceiling_is_capped_and_named() -> None:
    ceilings = TenantQuota.model_validate(
        {"cpu": "4", "memory": "8Gi", "storage": "100Gi", "gpu": "0"}
    )
    quota = effective_quota(_spec(cpu="8", memory="4Gi", storage="1Ti", gpu="1"), ceilings)
    assert (quota.cpu, quota.memory, quota.storage) == ("4", "4Gi", "100Gi")
    assert quota.accelerators == {"nvidia.com/gpu": 0}
    assert quota.capped == ("cpu", "storage", "nvidia.com/gpu")


def test_units_are_compared_by_amount_not_text() -> None:
    ceilings = TenantQuota.model_validate({"cpu": "1500m", "memory": "1Gi"})
    quota = effective_quota(_spec(cpu="2", memory="1024Mi", storage="10Gi"), ceilings)
    assert (quota.cpu, quota.memory) == ("1500m", "1024Mi")  # 1024Mi is not above 1Gi
    assert quota.capped == ("cpu",)


def test_no_ceiling_means_no_cap() -> None:
    quota = effective_quota(_spec(cpu="64", memory="1Ti", storage="10Ti"), TenantQuota())
    assert (quota.cpu, quota.memory, quota.storage) == ("64", "1Ti", "10Ti")
    assert quota.capped == ()


def test_accelerator_ceilings_apply_type_by_type() -> None:
    # A ceiling of two GPUs says nothing about MIG slices, and the reverse.
    ceilings = TenantQuota.model_validate({"gpu": 2, "accelerators": {MIG: 1}})
    spec = _spec(gpu=4, accelerators={MIG: 7, "amd.com/gpu": 4})
    quota = effective_quota(spec, ceilings)
    assert quota.accelerators == {"amd.com/gpu": 4, MIG: 1, "nvidia.com/gpu": 2}
    assert quota.capped == ("nvidia.com/gpu", MIG)


def test_the_quota_names_every_offered_accelerator_zero_unless_granted() -> None:
    quota = effective_quota(_spec(gpu=2), TenantQuota())
    hard = quota_hard(quota, DEFAULT_ACCELERATORS)
    assert hard["requests.nvidia.com/gpu"] == "2"
    for resource in DEFAULT_ACCELERATORS:
        if resource != "nvidia.com/gpu":
            assert hard[f"requests.{resource}"] == "0", resource
    # The profiles of the report, and the other vendors', are among those offered.
    for resource in (MIG, "nvidia.com/mig-1g.10gb", "amd.com/gpu", "gpu.intel.com/i915"):
        assert hard[f"requests.{resource}"] == "0"
    # Kubernetes takes extended resources in a quota only as requests.<name>.
    assert not [k for k in hard if k.startswith("limits.") and "/" in k]


def test_a_grant_of_a_slice_is_exactly_that_many() -> None:
    quota = effective_quota(_spec(accelerators={MIG: 2}), TenantQuota())
    hard = quota_hard(quota, [MIG, "nvidia.com/gpu"])
    assert (hard[f"requests.{MIG}"], hard["requests.nvidia.com/gpu"]) == ("2", "0")


def test_an_accelerator_the_platform_does_not_offer_is_named() -> None:
    spec = _spec(gpu=1, accelerators={"example.com/dongle": 1, "amd.com/gpu": 0})
    assert unoffered_accelerators(spec, DEFAULT_ACCELERATORS) == ["example.com/dongle"]
    assert unoffered_accelerators(spec, ["example.com/dongle"]) == ["nvidia.com/gpu"]


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"gpu": 1, "accelerators": {"nvidia.com/gpu": 2}}, "set one of them, not both"),
        ({"gpu": "500m"}, "whole number"),
        ({"accelerators": {"gpu": 1}}, "not an extended resource name"),
        ({"accelerators": {"kubernetes.io/gpu": 1}}, "native Kubernetes resource"),
        ({"accelerators": {"NVIDIA.com/gpu": 1}}, "not an extended resource name"),
        ({"accelerators": {MIG: -1}}, "greater than or equal to 0"),
    ],
)
def test_a_request_that_cannot_be_a_quota_is_refused(
    resources: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        SandboxResources.model_validate(resources)
    assert message in str(refused.value)


def test_a_tenant_gpu_ceiling_of_zero_conflicts_with_a_named_one() -> None:
    with pytest.raises(ValidationError, match="not both"):
        TenantQuota.model_validate({"gpu": "0", "accelerators": {"nvidia.com/gpu": 2}})


def test_the_platform_declares_its_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGSANDBOX_CLUSTER_REGION", "onprem:lu-national-1")
    monkeypatch.setenv("REGSANDBOX_CLUSTER_JURISDICTION", "LU")
    assert OperatorSettings().accelerator_resources == list(DEFAULT_ACCELERATORS)
    monkeypatch.setenv("REGSANDBOX_ACCELERATOR_RESOURCES", f'["{MIG}", "example.com/npu"]')
    assert OperatorSettings().accelerator_resources == [MIG, "example.com/npu"]
    monkeypatch.setenv("REGSANDBOX_ACCELERATOR_RESOURCES", '["cpu"]')
    with pytest.raises(ValidationError, match="not an extended resource name"):
        OperatorSettings()


def test_the_health_example_gets_exactly_one_slice_and_nothing_else(repo_root: Path) -> None:
    docs = {
        name: next(yaml.safe_load_all((repo_root / "examples/health" / name).read_text()))
        for name in ("tenant.yaml", "sandbox-sepsis-model.yaml")
    }
    tenant = TenantSpec.model_validate(docs["tenant.yaml"]["spec"])
    spec = SandboxSpec.model_validate(docs["sandbox-sepsis-model.yaml"]["spec"])
    hard = quota_hard(effective_quota(spec, tenant.quota), DEFAULT_ACCELERATORS)
    granted = {k: v for k, v in hard.items() if "/" in k and v != "0"}
    assert granted == {f"requests.{MIG}": "1"}
    assert hard["requests.nvidia.com/gpu"] == "0"


def test_policies_see_gpus_asked_for_by_name_as_gpus() -> None:
    # A rule on input.sandbox.resources.gpu (the guide's "no GPUs for research") must
    # not be sidestepped by asking for accelerators: {nvidia.com/gpu: N}.
    spec = sandbox_manifest("s", "t", resources={"accelerators": {"nvidia.com/gpu": 3, MIG: 1}})
    claim = SandboxClaim.model_validate({"name": "s", **spec["spec"]})
    assert claim.resources.gpu == 3
    assert claim.resources.accelerators == {"nvidia.com/gpu": 3, MIG: 1}
    document = claim.model_dump(mode="json", by_alias=True)
    assert document["resources"]["accelerators"][MIG] == 1
