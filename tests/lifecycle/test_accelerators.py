"""Accelerators as an attacker asks for them: MIG slices, other vendors' GPUs, made-up ones.

A tenant member in a sandbox granted two GPUs creates pods asking for MIG slices and
AMD GPUs. A ResourceQuota limits only the resources it names, so each offered
accelerator must be named (0 unless granted), and the API server itself must say
"exceeded quota". A resource the platform does not declare is refused by the
accelerator admission policy, and a Sandbox asking for one is refused by the operator.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.admission import load_chart_file
from sandbox.kube.apply import apply, get
from sandbox.kube.quota import usage_known
from sandbox.provision.accelerator_admission import (
    ACCELERATOR_POLICY,
    CHART_FILE,
    accelerator_policies,
    apply_accelerator_policies,
    render,
)
from sandbox.provision.names import LABEL_SANDBOX

from .helpers import RESOURCES, condition, ready_sandbox, sandbox_body, unique

MIG = "nvidia.com/mig-3g.40gb"


def test_the_chart_ships_the_accelerator_policy_the_code_builds(repo_root: Path) -> None:
    text = (repo_root / CHART_FILE).read_text()
    assert text == render(), "regenerate: python -m sandbox.provision.accelerator_admission"
    assert load_chart_file(text) == accelerator_policies()


def test_the_policy_fails_closed_without_its_quota_and_exempts_no_one() -> None:
    policy, binding = accelerator_policies()
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert "matchConditions" not in policy["spec"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert binding["spec"]["paramRef"] == {"name": "sandbox", "parameterNotFoundAction": "Deny"}
    assert "matchResources" not in binding["spec"]


@pytest.fixture(scope="module")
def accelerator_policy(admin_api: client.ApiClient) -> Iterator[None]:
    """The policy as the chart installs it, for this module only.

    Other tests of the session make sandbox-labelled namespaces by hand, without the
    operator's quota; the policy (rightly) admits no pod there.
    """
    apply_accelerator_policies(admin_api)
    # The API server enforces a new policy once its informers have seen the policy and
    # the binding: wait until a pod in a sandbox namespace without a quota is refused.
    probe = unique("sbx-probe")
    apply(
        admin_api,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": probe, "labels": {LABEL_SANDBOX: "probe"}},
        },
    )
    core = client.CoreV1Api(admin_api)
    deadline = time.monotonic() + 30
    while True:
        try:
            core.create_namespaced_pod(probe, _pod("probe"), dry_run="All")
        except ApiException as exc:
            if ACCELERATOR_POLICY in str(exc.body):
                break
            if exc.status not in (403, 422):  # e.g. no default ServiceAccount yet
                raise
        assert time.monotonic() < deadline, "the accelerator policy was never enforced"
        time.sleep(0.1)
    try:
        yield
    finally:
        core.delete_namespace(probe)
        admission = client.AdmissionregistrationV1Api(admin_api)
        admission.delete_validating_admission_policy_binding(ACCELERATOR_POLICY)
        admission.delete_validating_admission_policy(ACCELERATOR_POLICY)


@pytest.fixture
def member_sandbox(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    user_api: Callable[..., client.ApiClient],
) -> Callable[..., tuple[client.CoreV1Api, str]]:
    """A Ready sandbox with these resources; the member's CoreV1Api and the namespace."""

    def make(quota: dict[str, Any] | None = None, **resources: Any) -> tuple[Any, str]:
        member = unique("gpu-user")
        tenant = tenant_factory(members=[{"user": member, "role": "member"}], quota=quota or {})
        _, ns = ready_sandbox(admin_api, operator, tenant, resources={**RESOURCES, **resources})
        deadline = time.monotonic() + 30
        # Quota admission charges pods only once the quota's usage has been computed.
        while not usage_known(get(admin_api, "ResourceQuota", "sandbox", ns) or {}):
            assert time.monotonic() < deadline, "the sandbox quota's usage was never computed"
            time.sleep(0.1)
        return client.CoreV1Api(user_api(member)), ns

    return make


def _pod(name: str, **accelerators: int) -> dict[str, Any]:
    """A restricted-compliant pod asking for ``accelerators`` (extended resources)."""
    limits = {"cpu": "100m", "memory": "64Mi"}
    limits.update({resource: str(count) for resource, count in accelerators.items()})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {
                    "name": "train",
                    "image": "registry.example/train:1",
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "runAsNonRoot": True,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "resources": {"limits": limits},
                }
            ]
        },
    }


def _create(core: client.CoreV1Api, ns: str, pod: dict[str, Any], timeout: float = 10) -> None:
    """Create ``pod`` as the member; RBAC bindings reach the authorizer within moments."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            core.create_namespaced_pod(ns, pod)
            return
        except ApiException as exc:
            if exc.status != 403 or "cannot create" not in str(exc.body):
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _refused(core: client.CoreV1Api, ns: str, pod: dict[str, Any]) -> str:
    """The API server's refusal of ``pod``, which must be a 403; its message."""
    with pytest.raises(ApiException) as refused:
        _create(core, ns, pod)
    assert refused.value.status == 403, refused.value.body
    return str(refused.value.body)


@pytest.mark.integration
def test_slices_and_other_gpus_beyond_a_gpu_grant_are_refused_by_the_quota(
    member_sandbox: Callable[..., tuple[client.CoreV1Api, str]],
) -> None:
    # The report: a sandbox granted two GPUs; a member asks for 7 MIG slices and 4 AMD GPUs.
    core, ns = member_sandbox(gpu=2)
    slices = _refused(core, ns, _pod("slices", **{MIG: 7}))
    assert "exceeded quota: sandbox" in slices
    assert f"requests.{MIG}=7" in slices
    amd = _refused(core, ns, _pod("amd", **{"amd.com/gpu": 4}))
    assert "exceeded quota: sandbox" in amd
    assert "requests.amd.com/gpu=4" in amd
    # The grant itself is usable, and no more than it.
    _create(core, ns, _pod("two", **{"nvidia.com/gpu": 2}))
    third = _refused(core, ns, _pod("third", **{"nvidia.com/gpu": 1}))
    assert "exceeded quota: sandbox" in third


@pytest.mark.integration
def test_a_grant_of_slices_lets_exactly_that_many_in(
    member_sandbox: Callable[..., tuple[client.CoreV1Api, str]],
) -> None:
    # Asked for 3 slices, capped to 2 by the tenant's ceiling for that profile.
    core, ns = member_sandbox(quota={"accelerators": {MIG: 2}}, accelerators={MIG: 3})
    _create(core, ns, _pod("one", **{MIG: 1}))
    _create(core, ns, _pod("two", **{MIG: 1}))
    assert "exceeded quota: sandbox" in _refused(core, ns, _pod("three", **{MIG: 1}))
    # The slices grant no whole GPU, and no other profile.
    assert "exceeded quota: sandbox" in _refused(core, ns, _pod("gpu", **{"nvidia.com/gpu": 1}))
    other = _refused(core, ns, _pod("small", **{"nvidia.com/mig-1g.10gb": 1}))
    assert "exceeded quota: sandbox" in other


def _until_policy_sees_quota(core: client.CoreV1Api, ns: str, pod: dict[str, Any]) -> None:
    """Wait until the policy judges ``ns`` by its quota (its informer has the new quota).

    Until then a dry run is refused for want of a parameter, not by the policy's rule.
    """
    deadline = time.monotonic() + 30
    while True:
        try:
            core.create_namespaced_pod(ns, pod, dry_run="All")
        except ApiException as exc:
            if "may ask only for the accelerators" in str(exc.body):
                return
            if exc.status not in (403, 422) or time.monotonic() > deadline:
                raise
        assert time.monotonic() < deadline, "the accelerator policy never judged the pod"
        time.sleep(0.1)


@pytest.mark.integration
def test_a_resource_the_platform_does_not_declare_is_refused_at_admission(
    member_sandbox: Callable[..., tuple[client.CoreV1Api, str]],
    accelerator_policy: None,
) -> None:
    core, ns = member_sandbox(gpu=1)
    # No quota names it, so quota admission alone would let it in unlimited.
    dongles = _pod("dongle", **{"example.com/dongle": 8})
    _until_policy_sees_quota(core, ns, dongles)
    undeclared = _refused(core, ns, dongles)
    assert "regsandbox-sandbox-accelerators" in undeclared
    assert "may ask only for the accelerators" in undeclared
    init = _pod("init")
    init["spec"]["initContainers"] = [
        {
            **init["spec"]["containers"][0],
            "name": "warm",
            "resources": {"limits": {"cpu": "100m", "memory": "64Mi", "example.com/dongle": "1"}},
        }
    ]
    assert "may ask only for the accelerators" in _refused(core, ns, init)
    # The policy refuses only what is undeclared: the grant still goes in.
    _create(core, ns, _pod("granted", **{"nvidia.com/gpu": 1}))


@pytest.mark.integration
def test_a_sandbox_asking_for_an_accelerator_not_offered_is_refused(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
) -> None:
    tenant = tenant_factory()
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, f"namespace {home}")
    name = unique("sbx")
    resources = {**RESOURCES, "accelerators": {"example.com/dongle": 1}}
    apply(admin_api, sandbox_body(name, tenant, resources=resources))

    def refused() -> dict[str, Any] | None:
        cond = condition(get(admin_api, "Sandbox", name, home), "Ready")
        return cond if cond and cond["reason"] == "AcceleratorNotOffered" else None

    cond = operator.wait_until(refused, 30, "Ready=False/AcceleratorNotOffered")
    assert cond["status"] == "False"
    assert "offers no example.com/dongle" in cond["message"]
    assert get(admin_api, "Namespace", f"sbx-{tenant}-{name}") is None


@pytest.mark.integration
def test_the_api_server_refuses_a_gpu_count_given_twice(
    admin_api: client.ApiClient, crds: None
) -> None:
    twice = sandbox_body(
        unique("sbx"), "nobody", resources={"gpu": 1, "accelerators": {"nvidia.com/gpu": 2}}
    )
    twice["metadata"]["namespace"] = "default"
    with pytest.raises(ApiException) as refused:
        apply(admin_api, twice)
    assert refused.value.status == 422
    assert "set one of them, not both" in str(refused.value.body)
    # gpu at its default of 0 is not a second count.
    once = sandbox_body(unique("sbx"), "nobody", resources={"accelerators": {MIG: 1}})
    once["metadata"]["namespace"] = "default"
    once["spec"]["resources"]["gpu"] = 0
    accepted = apply(admin_api, once, dry_run=True)
    assert accepted["spec"]["resources"]["accelerators"] == {MIG: 1}
    tenant = {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": unique("t")},
        "spec": {
            "organisation": "Org",
            "sector": "research",
            "jurisdiction": "LU",
            "quota": {"gpu": 0, "accelerators": {"nvidia.com/gpu": 2}},
        },
    }
    with pytest.raises(ApiException) as contradictory:
        apply(admin_api, tenant)
    assert contradictory.value.status == 422
    assert "set one of them, not both" in str(contradictory.value.body)


@pytest.mark.integration
def test_a_quota_without_the_accelerator_caps_gets_them_back(
    admin_api: client.ApiClient,
    member_sandbox: Callable[..., tuple[client.CoreV1Api, str]],
    operator: OperatorProcess,
) -> None:
    # As a quota written by an operator from before the caps (or edited by hand) is.
    core, ns = member_sandbox(gpu=1)
    quota = client.CoreV1Api(admin_api).read_namespaced_resource_quota("sandbox", ns)
    quota.spec.hard = {k: v for k, v in quota.spec.hard.items() if "/" not in k}
    client.CoreV1Api(admin_api).replace_namespaced_resource_quota("sandbox", ns, quota)

    def capped() -> bool:
        live = get(admin_api, "ResourceQuota", "sandbox", ns) or {}
        hard = (live.get("spec") or {}).get("hard") or {}
        return hard.get(f"requests.{MIG}") == "0" and usage_known(live)

    operator.wait_until(capped, 60, "the drift check to restore the accelerator caps")
    assert "exceeded quota: sandbox" in _refused(core, ns, _pod("slices", **{MIG: 7}))


@pytest.mark.integration
def test_a_member_cannot_reach_devices_through_resource_claims(
    member_sandbox: Callable[..., tuple[client.CoreV1Api, str]],
) -> None:
    # Dynamic resource allocation hands out devices through ResourceClaims, which no
    # quota above limits; a member may create neither claims nor claim templates.
    core, ns = member_sandbox()
    authz = client.AuthorizationV1Api(core.api_client)

    def allowed(verb: str, resource: str, group: str = "") -> bool:
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    group=group, resource=resource, verb=verb, namespace=ns
                )
            )
        )
        return bool(authz.create_self_subject_access_review(review).status.allowed)

    # First the member's own rights, so that a refusal below is not a binding too new.
    deadline = time.monotonic() + 10
    while not allowed("create", "pods"):
        assert time.monotonic() < deadline, "the member never got its pod rights"
        time.sleep(0.2)
    for resource in ("resourceclaims", "resourceclaimtemplates"):
        for verb in ("create", "update", "patch"):
            assert not allowed(verb, resource, "resource.k8s.io"), (verb, resource)
