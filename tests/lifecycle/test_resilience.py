"""Drift is corrected, lifetimes end, crashes converge, and failures fail closed."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get, list_objects
from sandbox.kube.quota import RECOUNT_KEY
from sandbox.lifecycle.sandboxes.drift import RECOUNT_PATIENCE
from sandbox.provision.names import tenant_namespace

from .helpers import SYSTEM_NS, condition, ready_sandbox, sandbox_body, stray_sandbox, unique

pytestmark = pytest.mark.integration


def _audit_has(
    audit_actions: Callable[[], list[dict[str, Any]]], sandbox: str, action: str
) -> Callable[[], list[dict[str, Any]]]:
    def check() -> list[dict[str, Any]]:
        return [
            e
            for e in audit_actions()
            if e["action"] == action and e["resource"].get("sandbox") == sandbox
        ]

    return check


def test_hand_edits_are_reverted_and_audited(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory(members=[{"user": "dora", "role": "member"}])
    name, ns = ready_sandbox(admin_api, operator, tenant)
    delete(admin_api, "NetworkPolicy", "default-deny", ns)
    quota = get(admin_api, "ResourceQuota", "sandbox", ns)
    assert quota is not None
    client.CoreV1Api(admin_api).patch_namespaced_resource_quota(
        "sandbox", ns, {"spec": {"hard": {"limits.cpu": "64"}}}
    )
    apply(
        admin_api,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "allow-everything", "namespace": ns},
            "spec": {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]},
        },
    )

    def healed() -> bool:
        q = get(admin_api, "ResourceQuota", "sandbox", ns) or {}
        names = {p["metadata"]["name"] for p in list_objects(admin_api, "NetworkPolicy", ns)}
        return (
            "default-deny" in names
            and "allow-everything" not in names
            and q.get("spec", {}).get("hard", {}).get("limits.cpu") == "2"
        )

    operator.wait_until(healed, 30, "the drift to be corrected")
    entries = operator.wait_until(
        _audit_has(audit_actions, name, "sandbox.drift.corrected"), 15, "the drift audit entry"
    )
    corrections = " ".join(c for e in entries for c in e["details"]["corrections"])
    assert "NetworkPolicy/default-deny recreated" in corrections
    assert "NetworkPolicy/allow-everything removed" in corrections


def test_a_quota_that_misses_the_workspace_claim_is_recounted_and_audited(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory(members=[{"user": "fay", "role": "member"}])
    name, ns = ready_sandbox(admin_api, operator, tenant)

    def quota() -> dict[str, Any]:
        return get(admin_api, "ResourceQuota", "sandbox", ns) or {}

    def used_claims() -> str | None:
        return quota().get("status", {}).get("used", {}).get("persistentvolumeclaims")

    operator.wait_until(lambda: used_claims() == "1", 30, "the claim to be counted")
    recounted = _audit_has(audit_actions, name, "sandbox.quota.recounted")
    # Under-count, as a quota computed from a cache that missed the claim would. The quota
    # controller may still recount once by itself (the claim's PVC-protection finalizer is
    # an update it reacts to); then the operator never saw the miss: write it again.
    live = quota()
    for _ in range(10):
        current = quota()
        used = dict.fromkeys(current["status"]["used"], "0")
        try:
            client.CoreV1Api(admin_api).replace_namespaced_resource_quota_status(
                "sandbox",
                ns,
                {
                    # A status write replaces the labels too: keep them, so that the
                    # under-count is the only change (and no drift is corrected).
                    "metadata": {
                        "name": "sandbox",
                        "resourceVersion": current["metadata"]["resourceVersion"],
                        "labels": current["metadata"].get("labels"),
                        "annotations": current["metadata"].get("annotations"),
                    },
                    "spec": current["spec"],
                    "status": {"hard": current["status"]["hard"], "used": used},
                },
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise
            continue
        deadline = time.monotonic() + 5
        while not recounted() and time.monotonic() < deadline:
            time.sleep(0.2)
        if recounted():
            break
    # A recount asked for this quota before (its first count) holds the next one back.
    entries = operator.wait_until(
        recounted, 15 + RECOUNT_PATIENCE.total_seconds(), "the drift audit entry"
    )
    # A recount the controller did not act on (busy with other namespaces) is asked again
    # after RECOUNT_PATIENCE, as the drift check promises.
    operator.wait_until(
        lambda: used_claims() == "1",
        30 + RECOUNT_PATIENCE.total_seconds(),
        "the quota to be recounted",
    )
    assert any("ResourceQuota/sandbox recounted" in e["details"]["recount"] for e in entries)
    # Nobody edited anything: a recount is not drift (no DriftCorrected warning, which
    # feeds the RegsandboxDriftCorrected alert, nor a drift.corrected entry).
    drifted = _audit_has(audit_actions, name, "sandbox.drift.corrected")()
    assert not drifted, [e["details"] for e in drifted]
    events = client.CoreV1Api(admin_api).list_namespaced_event(
        tenant_namespace(tenant), field_selector=f"involvedObject.name={name}"
    )
    assert "DriftCorrected" not in {e.reason for e in events.items}
    # No limit lifted. The inert recount limit is left out: the snapshot may have been taken
    # while an earlier recount (of the claim's first count) still held it.
    assert _limits(quota()) == _limits(live)


def _limits(quota: dict[str, Any]) -> dict[str, str]:
    """The quota's hard limits other than the drift check's transient recount limit."""
    return {k: v for k, v in quota["spec"]["hard"].items() if k != RECOUNT_KEY}


def test_expiry_destroys_namespace_and_key(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory()
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, "the home namespace")
    name = unique("brief")
    apply(admin_api, sandbox_body(name, tenant, lifetime={"ttl": "6s"}))
    ns = f"sbx-{tenant}-{name}"
    operator.wait_until(lambda: get(admin_api, "Namespace", ns), 30, "provisioning")

    def expired() -> dict[str, Any] | None:
        obj = get(admin_api, "Sandbox", name, home)
        cond = condition(obj, "Ready")
        return obj if cond and cond["reason"] == "Expired" else None

    operator.wait_until(expired, 60, "the sandbox to expire")
    assert get(admin_api, "Namespace", ns) is None
    assert get(admin_api, "StorageClass", f"regsandbox-{ns}") is None
    keys = list_objects(admin_api, "Secret", SYSTEM_NS, "regsandbox.io/key=wrapped-data-key")
    assert not any(k["metadata"]["annotations"]["regsandbox.io/sandbox-id"] == ns for k in keys)
    operator.wait_until(_audit_has(audit_actions, name, "key.destroyed"), 10, "key.destroyed")
    operator.wait_until(_audit_has(audit_actions, name, "sandbox.expired"), 10, "sandbox.expired")
    delete(admin_api, "Sandbox", name, home)
    operator.wait_until(lambda: get(admin_api, "Sandbox", name, home) is None, 30, "deletion")


def test_a_retained_expiry_cuts_access_and_is_on_record_once(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    """AI Act Art. 59(1)(h) and EHDS Art. 73: an auditor must find the end of a sandbox in
    the log whether its data is deleted or retained — not only a Kubernetes Event."""
    tenant = tenant_factory()
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, "the home namespace")
    name = unique("kept")
    apply(admin_api, sandbox_body(name, tenant, lifetime={"ttl": "6s", "onExpiry": "retain"}))
    ns = f"sbx-{tenant}-{name}"
    operator.wait_until(lambda: get(admin_api, "Namespace", ns), 30, "provisioning")

    def retained() -> dict[str, Any] | None:
        cond = condition(get(admin_api, "Sandbox", name, home), "Ready")
        return cond if cond and cond["reason"] == "ExpiredRetained" else None

    operator.wait_until(retained, 60, "the sandbox to expire, retained")
    assert get(admin_api, "NetworkPolicy", "quarantine", ns) is not None
    [ended] = operator.wait_until(
        _audit_has(audit_actions, name, "sandbox.expired"), 10, "sandbox.expired"
    )
    assert ended["details"]["onExpiry"] == "retain"
    # Over the next resyncs (every second here) the end stays recorded once, and the key
    # (the retained data's) is not destroyed: watched for a few intervals.
    watch_until = time.monotonic() + 4
    while time.monotonic() < watch_until:
        assert len(_audit_has(audit_actions, name, "sandbox.expired")()) == 1
        assert not _audit_has(audit_actions, name, "key.destroyed")()
        time.sleep(0.5)
    # Deleting it then destroys the key, on record too.
    delete(admin_api, "Sandbox", name, home)
    operator.wait_until(_audit_has(audit_actions, name, "key.destroyed"), 60, "key.destroyed")
    operator.wait_until(lambda: get(admin_api, "Sandbox", name, home) is None, 30, "deletion")


def test_sigkill_mid_provisioning_converges_without_duplicates(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    swap_operator: Callable[..., OperatorProcess],
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    tenant = tenant_factory(members=[{"user": "eve", "role": "owner"}])
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, "the home namespace")
    # An operator that stops for good just before the quota: the namespace, isolation,
    # key, StorageClass and workspace claim exist; the quota and member access do not.
    halted = tmp_path / "halted"
    doomed = swap_operator(REGSANDBOX_TEST_HALT_BEFORE=f"ResourceQuota:{halted}")
    name = unique("crash")
    ns = f"sbx-{tenant}-{name}"
    apply(admin_api, sandbox_body(name, tenant))
    doomed.wait_until(halted.exists, 60, "provisioning to reach the quota")
    assert get(admin_api, "PersistentVolumeClaim", "workspace", ns) is not None
    assert get(admin_api, "ResourceQuota", "sandbox", ns) is None
    assert list_objects(admin_api, "RoleBinding", ns) == []
    ready = condition(get(admin_api, "Sandbox", name, home), "Ready")
    assert ready is None or ready["status"] != "True"
    doomed.kill()
    operator.start()

    def converged() -> dict[str, Any] | None:
        obj = get(admin_api, "Sandbox", name, home)
        cond = condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    obj = operator.wait_until(converged, 60, "convergence after the crash")
    keys = [
        k
        for k in list_objects(admin_api, "Secret", SYSTEM_NS, "regsandbox.io/key=wrapped-data-key")
        if k["metadata"]["annotations"]["regsandbox.io/sandbox-id"] == ns
    ]
    assert len(keys) == 1
    stored = json.loads(base64.b64decode(keys[0]["data"]["value"]))
    assert obj["status"]["keyId"] == stored["keyId"]  # the key made before the crash
    classes = list_objects(admin_api, "StorageClass", None, f"regsandbox.io/sandbox={ns}")
    assert len(classes) == 1
    policies = sorted(p["metadata"]["name"] for p in list_objects(admin_api, "NetworkPolicy", ns))
    assert policies == ["allow-dataset-gateway", "allow-dns", "default-deny"]
    assert [b["metadata"]["name"] for b in list_objects(admin_api, "RoleBinding", ns)] == [
        "regsandbox-workloads"
    ]
    assert get(admin_api, "PersistentVolumeClaim", "workspace", ns) is not None
    # The quota made after the crash counts the claim made before it.
    used = get(admin_api, "ResourceQuota", "sandbox", ns)["status"]["used"]  # type: ignore[index]
    assert used["persistentvolumeclaims"] == "1"
    provisioned = operator.wait_until(
        _audit_has(audit_actions, name, "sandbox.provisioned"), 15, "the provisioned entry"
    )
    assert len(provisioned) == 1


@pytest.mark.parametrize(
    ("tenant_spec", "sandbox_spec", "reason", "hint"),
    [
        (
            {"quota": {"maxLifetime": "30d"}},
            {"lifetime": {"ttl": "60d"}},
            "LifetimeExceedsTenantMaximum",
            "shorten spec.lifetime",
        ),
        ({}, {"region": "mars:olympus-1"}, "PolicyDenied", "RESIDENCY_SANDBOX_REGION_MISMATCH"),
    ],
)
def test_bad_specs_end_in_a_condition_that_says_what_to_change(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    tenant_spec: dict[str, Any],
    sandbox_spec: dict[str, Any],
    reason: str,
    hint: str,
) -> None:
    tenant = tenant_factory(**tenant_spec)
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, "the home namespace")
    name = unique("bad")
    apply(admin_api, sandbox_body(name, tenant, **sandbox_spec))

    def refused() -> dict[str, Any] | None:
        cond = condition(get(admin_api, "Sandbox", name, home), "Ready")
        return cond if cond and cond["reason"] == reason else None

    cond = operator.wait_until(refused, 30, f"Ready=False/{reason}")
    assert cond["status"] == "False"
    assert hint in cond["message"]
    assert get(admin_api, "Namespace", f"sbx-{tenant}-{name}") is None
    delete(admin_api, "Sandbox", name, home)


def test_sandbox_outside_a_tenant_home_is_refused(
    admin_api: client.ApiClient, operator: OperatorProcess
) -> None:
    with stray_sandbox(admin_api, operator) as cond:
        assert "tenant-<tenant name>" in cond["message"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"REGSANDBOX_AUDIT_URL": "http://127.0.0.1:{port}"}, "AuditLogUnavailable"),
        (
            {"REGSANDBOX_POLICY_ENGINE": "opa", "REGSANDBOX_OPA_URL": "http://127.0.0.1:{port}"},
            "PolicyEngineUnavailable",
        ),
    ],
)
def test_audit_log_or_policy_engine_down_provisions_nothing(
    admin_api: client.ApiClient,
    swap_operator: Callable[..., OperatorProcess],
    tenant_factory: Callable[..., str],
    env: dict[str, str],
    reason: str,
) -> None:
    port = _closed_port()
    proc = swap_operator(**{k: v.format(port=port) for k, v in env.items()})
    tenant = tenant_factory()
    home = f"tenant-{tenant}"
    if reason == "AuditLogUnavailable":
        # Tenant RBAC is a grant, so it waits for the audit log too: make the home by hand.
        apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": home}})
    proc.wait_until(lambda: get(admin_api, "Namespace", home), 30, "the home namespace")
    name = unique("closed")
    apply(admin_api, sandbox_body(name, tenant))

    def refused() -> dict[str, Any] | None:
        cond = condition(get(admin_api, "Sandbox", name, home), "Ready")
        return cond if cond and cond["reason"] == reason else None

    cond = proc.wait_until(refused, 45, f"Ready=False/{reason}")
    assert cond["status"] == "False"
    time.sleep(1.0)
    assert get(admin_api, "Namespace", f"sbx-{tenant}-{name}") is None
    delete(admin_api, "Sandbox", name, home)
    if reason == "AuditLogUnavailable":
        # The finalizer cannot be released without logging the teardown: it waits.
        time.sleep(2.0)
        assert get(admin_api, "Sandbox", name, home) is not None


def test_a_teardown_retried_after_the_log_was_down_still_names_the_key(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    swap_operator: Callable[..., OperatorProcess],
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory()
    name, ns = ready_sandbox(admin_api, operator, tenant)
    home = f"tenant-{tenant}"
    key_id = (get(admin_api, "Sandbox", name, home) or {})["status"]["keyId"]

    def key_present() -> bool:
        wrapped = list_objects(admin_api, "Secret", SYSTEM_NS, "regsandbox.io/key=wrapped-data-key")
        return any(k["metadata"]["annotations"]["regsandbox.io/sandbox-id"] == ns for k in wrapped)

    assert key_present()
    # An operator whose audit log is down deletes the namespace and destroys the key, then
    # cannot log that: the finalizer stays.
    down = swap_operator(REGSANDBOX_AUDIT_URL=f"http://127.0.0.1:{_closed_port()}")
    delete(admin_api, "Sandbox", name, home)
    down.wait_until(lambda: get(admin_api, "Namespace", ns) is None, 60, "the namespace to go")
    down.wait_until(lambda: not key_present(), 30, "the key to be destroyed")
    time.sleep(1.0)
    assert get(admin_api, "Sandbox", name, home) is not None
    down.stop()
    # With the log back, the retry finds no key left, and still records which key it was.
    operator.start()
    operator.wait_until(
        lambda: get(admin_api, "Sandbox", name, home) is None, 60, "the finalizer to be released"
    )
    entries = operator.wait_until(
        _audit_has(audit_actions, name, "key.destroyed"), 15, "the key destruction entry"
    )
    assert len(entries) == 1
    assert entries[0]["details"]["keyId"] == key_id
    assert entries[0]["details"]["outcome"] == "absent"
    assert len(_audit_has(audit_actions, name, "sandbox.deleted")()) == 1


def test_a_tenants_member_rbac_edited_by_hand_is_restored_and_audited(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory(members=[{"user": "gil", "role": "member"}])
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, "the home namespace")
    bindings = operator.wait_until(
        lambda: list_objects(admin_api, "RoleBinding", home), 30, "the member RoleBindings"
    )
    victim = next(b for b in bindings if b.get("subjects"))
    name = victim["metadata"]["name"]
    # Someone swaps the members for themselves.
    mallory = {"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}
    client.RbacAuthorizationV1Api(admin_api).patch_namespaced_role_binding(
        name, home, {"subjects": [mallory]}
    )

    def healed() -> bool:
        live = get(admin_api, "RoleBinding", name, home) or {}
        return [s["name"] for s in live.get("subjects") or []] == [
            s["name"] for s in victim["subjects"]
        ]

    operator.wait_until(healed, 30, "the member RoleBinding to be restored")
    entries = operator.wait_until(
        lambda: [
            e
            for e in audit_actions()
            if e["action"] == "tenant.drift.corrected" and e["resource"].get("tenant") == tenant
        ],
        15,
        "the tenant drift audit entry",
    )
    assert f"RoleBinding/{name} restored" in entries[0]["details"]["corrections"]
