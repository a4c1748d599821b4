"""The local control plane is real: RBAC, admission, quota, controllers and CRD schemas."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.devenv.controlplane import ControlPlane

pytestmark = pytest.mark.integration


def _ns(admin_api: client.ApiClient, labels: dict[str, str] | None = None) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin_api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels or {}))
    )
    return name


def _eventually(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def test_user_without_bindings_is_forbidden_then_allowed_after_rolebinding(
    admin_api: client.ApiClient, user_api: Callable[..., client.ApiClient]
) -> None:
    ns = _ns(admin_api)
    bob = client.CoreV1Api(user_api("bob", "team-x"))
    with pytest.raises(ApiException) as denied:
        bob.list_namespaced_secret(ns)
    assert denied.value.status == 403
    rbac = client.RbacAuthorizationV1Api(admin_api)
    rbac.create_namespaced_role(
        ns,
        client.V1Role(
            metadata=client.V1ObjectMeta(name="secret-reader"),
            rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])],
        ),
    )
    rbac.create_namespaced_role_binding(
        ns,
        client.V1RoleBinding(
            metadata=client.V1ObjectMeta(name="bob-reads-secrets"),
            role_ref=client.V1RoleRef(
                api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"
            ),
            subjects=[
                client.RbacV1Subject(kind="User", name="bob", api_group="rbac.authorization.k8s.io")
            ],
        ),
    )
    # RBAC changes propagate through the authorizer's informer; allow a moment.
    _eventually(lambda: _can_list_secrets(bob, ns), 10, "the RoleBinding to take effect")
    # The binding grants exactly what it names: configmaps stay forbidden.
    with pytest.raises(ApiException) as still_denied:
        bob.list_namespaced_config_map(ns)
    assert still_denied.value.status == 403


def _can_list_secrets(api: client.CoreV1Api, ns: str) -> bool:
    try:
        api.list_namespaced_secret(ns)
    except ApiException as exc:
        if exc.status != 403:
            raise
        return False
    return True


def _pod(name: str, *, privileged: bool) -> client.V1Pod:
    if privileged:
        ctx = client.V1SecurityContext(privileged=True)
    else:
        ctx = client.V1SecurityContext(
            allow_privilege_escalation=False,
            run_as_non_root=True,
            capabilities=client.V1Capabilities(drop=["ALL"]),
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[client.V1Container(name="c", image="busybox", security_context=ctx)]
        ),
    )


def test_pod_security_restricted_rejects_privileged_pod_and_admits_compliant(
    admin_api: client.ApiClient,
) -> None:
    ns = _ns(admin_api, {"pod-security.kubernetes.io/enforce": "restricted"})
    core = client.CoreV1Api(admin_api)
    _eventually(
        lambda: _has_default_sa(core, ns), 30, "the default ServiceAccount in the new namespace"
    )
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(ns, _pod("evil", privileged=True))
    assert rejected.value.status == 403
    assert "violates PodSecurity" in rejected.value.body
    created = core.create_namespaced_pod(ns, _pod("good", privileged=False))
    assert created.metadata.name == "good"


def _has_default_sa(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespaced_service_account("default", ns)
    except ApiException:
        return False
    return True


def test_resource_quota_rejects_object_beyond_its_count(admin_api: client.ApiClient) -> None:
    ns = _ns(admin_api)
    core = client.CoreV1Api(admin_api)
    # Secrets, because nothing else creates one in a new namespace. A configmap count races
    # the root-CA publisher: when kube-root-ca.crt lands just before the quota, the quota
    # controller can count from a cache that has not seen it yet and then keeps "0" until
    # its five-minute full resync (seen in CI).
    core.create_namespaced_resource_quota(
        ns,
        client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="q"),
            spec=client.V1ResourceQuotaSpec(hard={"secrets": "2"}),
        ),
    )
    # Admission refuses every secret until the quota controller has computed the usage.
    _eventually(
        lambda: (
            (core.read_namespaced_resource_quota("q", ns).status.used or {}).get("secrets") == "0"
        ),
        90,  # the quota controller can lag on a loaded two-core machine
        "quota usage to be computed",
    )
    for name in ("first", "second"):
        core.create_namespaced_secret(
            ns, client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data={"k": "v"})
        )
    with pytest.raises(ApiException) as exceeded:
        core.create_namespaced_secret(
            ns, client.V1Secret(metadata=client.V1ObjectMeta(name="third"), string_data={"k": "v"})
        )
    assert exceeded.value.status == 403
    assert "exceeded quota" in exceeded.value.body
    assert {s.metadata.name for s in core.list_namespaced_secret(ns).items} == {"first", "second"}


def test_deleted_namespace_disappears(admin_api: client.ApiClient) -> None:
    ns = _ns(admin_api)
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="x"))
    )
    core.delete_namespace(ns)

    def gone() -> bool:
        try:
            core.read_namespace(ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    _eventually(gone, 60, f"namespace {ns} to be finalized by the namespace controller")


def test_garbage_collector_removes_dependents_of_deleted_owner(admin_api: client.ApiClient) -> None:
    ns = _ns(admin_api)
    core = client.CoreV1Api(admin_api)
    owner = core.create_namespaced_config_map(
        ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )
    core.delete_namespaced_config_map("owner", ns)

    def collected() -> bool:
        try:
            core.read_namespaced_config_map("dependent", ns)
        except ApiException as exc:
            return exc.status == 404
        return False

    _eventually(collected, 60, "the garbage collector to delete the dependent")


def test_crd_openapi_schema_rejects_invalid_object(admin_api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(admin_api)
    group = f"g{uuid.uuid4().hex[:6]}.example.com"
    ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "required": ["size"],
                                        "properties": {"size": {"type": "integer", "minimum": 1}},
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        }
    )
    custom = client.CustomObjectsApi(admin_api)
    ns = _ns(admin_api)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(f"widgets.{group}")
        return any(
            c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])
        )

    _eventually(established, 30, "the CRD to be established")

    def body(size: object) -> dict[str, object]:
        return {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": f"w{size}"},
            "spec": {"size": size},
        }

    _eventually(lambda: _try_create(custom, group, ns, body(3)), 30, "the CRD endpoint to serve")
    with pytest.raises(ApiException) as invalid:
        custom.create_namespaced_custom_object(group, "v1", ns, "widgets", body(-1))
    assert invalid.value.status == 422
    assert "spec.size" in invalid.value.body


def _try_create(
    custom: client.CustomObjectsApi, group: str, ns: str, obj: dict[str, object]
) -> bool:
    try:
        custom.create_namespaced_custom_object(group, "v1", ns, "widgets", obj)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_status_reports_ready_and_user_kubeconfig_authenticates(
    control_plane: ControlPlane, user_api: Callable[..., client.ApiClient]
) -> None:
    info = control_plane.status()
    assert info["ready"] is True
    assert set(info["servers"]) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    review = client.AuthenticationV1Api(user_api("carol", "g1", "g2")).create_self_subject_review(
        client.V1SelfSubjectReview()
    )
    assert review.status.user_info.username == "carol"
    assert {"g1", "g2"} <= set(review.status.user_info.groups)
