"""A Sandbox goes from apply to an isolated, encrypted namespace, and back to nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get, list_objects

from .helpers import SYSTEM_NS, condition, sandbox_body, unique

pytestmark = pytest.mark.integration


def _ready(api: client.ApiClient, name: str, ns: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        obj = get(api, "Sandbox", name, ns)
        cond = condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    return check


def test_compliant_sandbox_is_provisioned_isolated_and_encrypted_then_torn_down(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory(members=[{"user": "ana", "role": "owner"}])
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, f"namespace {home}")
    name = unique("sbx")
    apply(admin_api, sandbox_body(name, tenant))
    obj = operator.wait_until(_ready(admin_api, name, home), 60, "the sandbox to be Ready")

    ns = f"sbx-{tenant}-{name}"
    status = obj["status"]
    assert status["namespace"] == ns
    assert status["tenant"] == tenant
    assert status["keyId"].startswith("local-")
    for cond in ("PolicyCompliant", "Isolated", "StorageEncrypted"):
        assert condition(obj, cond)["status"] == "True", cond  # type: ignore[index]

    namespace = get(admin_api, "Namespace", ns)
    assert namespace is not None
    labels = namespace["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["regsandbox.io/tenant"] == tenant
    policies = {p["metadata"]["name"] for p in list_objects(admin_api, "NetworkPolicy", ns)}
    assert {"default-deny", "allow-dns", "allow-dataset-gateway"} <= policies
    quota = get(admin_api, "ResourceQuota", "sandbox", ns)
    assert quota is not None
    assert quota["spec"]["hard"]["limits.cpu"] == "2"
    # The quota counts the workspace claim (charged by admission, or recounted by the
    # drift check), so no second claim fits.
    counted = operator.wait_until(
        lambda: (
            (q := get(admin_api, "ResourceQuota", "sandbox", ns) or {})
            .get("status", {})
            .get("used", {})
            .get("persistentvolumeclaims")
            == "1"
            and q
        ),
        30,
        "the quota to count the claim",
    )
    hard_storage = quota["spec"]["hard"]["requests.storage"]
    assert counted["status"]["used"]["requests.storage"] == hard_storage
    storage_class = get(admin_api, "StorageClass", status["storageClass"])
    assert storage_class is not None
    assert storage_class["parameters"]["encrypted"] == "true"
    pvc = get(admin_api, "PersistentVolumeClaim", "workspace", ns)
    assert pvc is not None
    assert pvc["spec"]["storageClassName"] == status["storageClass"]
    wrapped = list_objects(admin_api, "Secret", SYSTEM_NS, "regsandbox.io/key=wrapped-data-key")
    assert any(s["metadata"]["annotations"]["regsandbox.io/sandbox-id"] == ns for s in wrapped)

    delete(admin_api, "Sandbox", name, home)
    operator.wait_until(
        lambda: get(admin_api, "Sandbox", name, home) is None, 90, "the finalizer to be released"
    )
    assert get(admin_api, "Namespace", ns) is None
    assert get(admin_api, "StorageClass", status["storageClass"]) is None
    wrapped = list_objects(admin_api, "Secret", SYSTEM_NS, "regsandbox.io/key=wrapped-data-key")
    assert not any(s["metadata"]["annotations"]["regsandbox.io/sandbox-id"] == ns for s in wrapped)

    def logged() -> list[str] | None:
        mine = [e for e in audit_actions() if e["resource"].get("sandbox") == name]
        actions = [e["action"] for e in mine]
        return actions if "sandbox.deleted" in actions else None

    actions = operator.wait_until(logged, 10, "the audit entries")
    assert actions[:2] == ["sandbox.provisioning", "sandbox.provisioned"]
    assert "key.destroyed" in actions
    destroyed = next(
        e
        for e in audit_actions()
        if e["action"] == "key.destroyed" and e["resource"]["sandbox"] == name
    )
    assert destroyed["details"]["keyId"] == status["keyId"]


def test_residency_violation_provisions_nothing(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory()
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, f"namespace {home}")
    name = unique("sbx")
    apply(admin_api, sandbox_body(name, tenant, region="aws:us-east-1"))

    def denied() -> dict[str, Any] | None:
        obj = get(admin_api, "Sandbox", name, home)
        cond = condition(obj, "PolicyCompliant")
        return obj if cond and cond["status"] == "False" else None

    obj = operator.wait_until(denied, 60, "the policy denial")
    assert "RESIDENCY" in condition(obj, "PolicyCompliant")["message"]  # type: ignore[index]
    assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
    assert get(admin_api, "Namespace", f"sbx-{tenant}-{name}") is None
    # The denial is in the audit log, by the operator's identity, with the codes.
    entries = operator.wait_until(
        lambda: [
            e
            for e in audit_actions()
            if e["action"] == "sandbox.denied" and e["resource"].get("sandbox") == name
        ],
        15,
        "the denial audit entry",
    )
    assert len(entries) == 1
    assert entries[0]["actor"]["user"] == (
        "system:serviceaccount:regsandbox-system:regsandbox-operator"
    )
    assert entries[0]["outcome"] == "denied"
    assert entries[0]["decision"]["allow"] is False
    assert any(code.startswith("RESIDENCY") for code in entries[0]["decision"]["codes"])
    # And the person who applied it sees a Warning event on the Sandbox.
    core = client.CoreV1Api(admin_api)

    def warned() -> list[Any]:
        events = core.list_namespaced_event(home, field_selector=f"involvedObject.name={name}")
        return [e for e in events.items if e.type == "Warning" and e.reason == "PolicyDenied"]

    assert "RESIDENCY" in operator.wait_until(warned, 15, "the Warning event")[0].message
    delete(admin_api, "Sandbox", name, home)
