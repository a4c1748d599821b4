"""Tenants cannot see each other, and members cannot loosen their own sandbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import get
from sandbox.kube.quota import usage_known

from .helpers import ready_sandbox, unique

pytestmark = pytest.mark.integration


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def _eventually_status(call: Callable[[], Any], expected: int, timeout: float = 10.0) -> int:
    """RBAC bindings reach the authorizer's cache within moments; poll briefly."""
    deadline = time.monotonic() + timeout
    while True:
        got = _status(call)
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


@pytest.fixture(scope="module")
def two_tenants(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    user_api: Callable[..., client.ApiClient],
) -> dict[str, Any]:
    from sandbox.kube.apply import apply

    out: dict[str, Any] = {}
    for label in ("a", "b"):
        tenant = unique(f"iso{label}")
        member = unique(f"user{label}")
        apply(
            admin_api,
            {
                "apiVersion": "regsandbox.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": tenant},
                "spec": {
                    "organisation": tenant,
                    "sector": "finance",
                    "jurisdiction": "LU",
                    "members": [{"user": member, "role": "member"}],
                    "attestations": {"supervisoryAuthority": "CSSF"},
                    "quota": {"cpu": "2", "memory": "4Gi"},
                },
            },
        )
        name, ns = ready_sandbox(admin_api, operator, tenant)
        out[label] = {
            "tenant": tenant,
            "home": f"tenant-{tenant}",
            "sandbox": name,
            "ns": ns,
            "api": user_api(member),
        }
    return out


def test_member_of_a_is_forbidden_everything_of_b(two_tenants: dict[str, Any]) -> None:
    a, b = two_tenants["a"], two_tenants["b"]
    core = client.CoreV1Api(a["api"])
    for ns in (b["home"], b["ns"]):
        for reader in (
            core.list_namespaced_pod,
            core.list_namespaced_secret,
            core.list_namespaced_config_map,
            core.list_namespaced_persistent_volume_claim,
        ):
            assert _status(lambda r=reader, n=ns: r(n)) == 403, (reader.__name__, ns)
    assert _status(core.list_namespace) == 403
    custom = client.CustomObjectsApi(a["api"])
    assert (
        _status(
            lambda: custom.list_namespaced_custom_object(
                "regsandbox.io", "v1alpha1", b["home"], "sandboxes"
            )
        )
        == 403
    )
    # The same member does reach its own tenant (the test can tell the difference).
    assert (
        _eventually_status(
            lambda: custom.list_namespaced_custom_object(
                "regsandbox.io", "v1alpha1", a["home"], "sandboxes"
            ),
            200,
        )
        == 200
    )


def test_in_its_own_home_a_member_manages_sandboxes_and_nothing_more(
    two_tenants: dict[str, Any],
) -> None:
    a = two_tenants["a"]
    home = a["home"]
    core = client.CoreV1Api(a["api"])
    rbac = client.RbacAuthorizationV1Api(a["api"])
    custom = client.CustomObjectsApi(a["api"])

    def sandboxes() -> Any:
        return custom.list_namespaced_custom_object("regsandbox.io", "v1alpha1", home, "sandboxes")

    assert _eventually_status(sandboxes, 200) == 200
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "x"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"kind": "User", "name": "x", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    review = {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "ExportReview",
        "metadata": {"name": "x"},
        "spec": {"export": "x", "decision": "approve", "reviewer": "x", "comment": "x"},
    }
    for what, call in (
        ("create pods", lambda: core.create_namespaced_pod(home, _pod("x"))),
        ("list secrets", lambda: core.list_namespaced_secret(home)),
        ("create configmaps", lambda: core.create_namespaced_config_map(home, config)),
        ("create rolebindings", lambda: rbac.create_namespaced_role_binding(home, binding)),
        ("patch the namespace", lambda: core.patch_namespace(home, {"metadata": {"labels": {}}})),
        (
            "review exports",
            lambda: custom.create_namespaced_custom_object(
                "regsandbox.io", "v1alpha1", home, "exportreviews", review
            ),
        ),
    ):
        with pytest.raises(ApiException) as refused:
            call()
        assert refused.value.status == 403, what
        assert "cannot" in str(refused.value.body), what  # RBAC's refusal, not admission's


def _pod(name: str, **container: Any) -> dict[str, Any]:
    sec = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": "c",
                "image": "registry.example/train:1",
                "securityContext": sec,
                "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
                **container,
            }
        ]
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def test_member_runs_workloads_but_cannot_loosen_isolation(
    two_tenants: dict[str, Any], admin_api: client.ApiClient
) -> None:
    a = two_tenants["a"]
    ns = a["ns"]
    core = client.CoreV1Api(a["api"])
    # Quota admission charges pods only once the quota's usage has been computed.
    deadline = time.monotonic() + 30
    while not usage_known(get(admin_api, "ResourceQuota", "sandbox", ns) or {}):
        assert time.monotonic() < deadline, "the sandbox quota's usage was never computed"
        time.sleep(0.1)
    net = client.NetworkingV1Api(a["api"])
    rbac = client.RbacAuthorizationV1Api(a["api"])
    assert _eventually_status(lambda: core.create_namespaced_pod(ns, _pod("ok")), 200) == 200
    privileged = _pod("priv", securityContext={"privileged": True})
    assert _status(lambda: core.create_namespaced_pod(ns, privileged)) == 403
    host_path = _pod("hp")
    host_path["spec"]["volumes"] = [{"name": "h", "hostPath": {"path": "/etc"}}]
    assert _status(lambda: core.create_namespaced_pod(ns, host_path)) == 403
    greedy = _pod("greedy", resources={"limits": {"cpu": "8", "memory": "512Mi"}})
    assert _status(lambda: core.create_namespaced_pod(ns, greedy)) == 403  # LimitRange max
    # Each pod fits the LimitRange; together they would pass the quota (limits.cpu 2).
    fits = _pod("fits", resources={"limits": {"cpu": "1500m", "memory": "512Mi"}})
    assert _status(lambda: core.create_namespaced_pod(ns, fits)) == 200
    with pytest.raises(ApiException) as exceeded:
        core.create_namespaced_pod(ns, _pod("over"))
    assert exceeded.value.status == 403
    assert "exceeded quota: sandbox" in str(exceeded.value.body)

    patch = {"metadata": {"labels": {"x": "y"}}}
    assert _status(lambda: net.patch_namespaced_network_policy("default-deny", ns, patch)) == 403
    assert _status(lambda: net.delete_namespaced_network_policy("default-deny", ns)) == 403
    assert _status(lambda: core.patch_namespaced_resource_quota("sandbox", ns, patch)) == 403
    assert _status(lambda: rbac.delete_namespaced_role_binding("regsandbox-workloads", ns)) == 403
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "sneaky"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "admin",
        },
        "subjects": [{"kind": "User", "name": "x", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    assert _status(lambda: rbac.create_namespaced_role_binding(ns, binding)) == 403
    relabel = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}
    assert _status(lambda: core.patch_namespace(ns, relabel)) == 403
    assert _status(lambda: core.read_namespaced_secret("regsandbox-volume-key", ns)) == 403
