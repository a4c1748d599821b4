"""Two operator replicas elect one leader; killing it mid-work loses and repeats nothing.

Issue 19: "kill the leader while 50 sandboxes are being created; all become Ready, none
twice-provisioned (no second key, no duplicate audit records of provisioning)".
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from operators.main import LEADERSHIP_LOST_EXIT
from sandbox.devenv.operator_process import OperatorProcess, install_operator_rbac
from sandbox.kube.apply import apply, get, list_objects
from sandbox.provision.names import sandbox_id, tenant_namespace
from sandbox.provision.rbac import LEADER_ELECTION_LEASE, LEADER_ELECTION_ROLE
from sandbox.testing import sandbox_manifest

from .conftest import SYSTEM_NS, lease_holder

pytestmark = pytest.mark.integration

SANDBOXES = 50
RESOURCES = {"cpu": "1", "memory": "1Gi", "storage": "1Gi"}


def _ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _sandboxes(api: client.ApiClient, tenant: str) -> list[dict[str, Any]]:
    return list_objects(api, "Sandbox", tenant_namespace(tenant))


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` (not tied to one process: the leader may be the one killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _started_acting(proc: OperatorProcess) -> bool:
    return "regsandbox operator started" in proc.log.read_text(errors="replace")


def test_only_the_lease_holder_acts_and_a_clean_stop_hands_over(
    admin_api: client.ApiClient,
    replicas: Callable[..., OperatorProcess],
    tenant: str,
) -> None:
    # A long lease: the standby can only take over this quickly if the leader released it.
    first = replicas("replica-a", lease_seconds=60)
    first.wait_until(lambda: lease_holder(admin_api) == "replica-a", 60, "replica-a to lead")
    second = replicas("replica-b", lease_seconds=60)
    first.wait_until(
        lambda: get(admin_api, "Namespace", tenant_namespace(tenant)), 60, "the tenant namespace"
    )
    second.wait_until(
        lambda: "waiting for lease" in second.log.read_text(errors="replace"),
        30,
        "replica-b to wait for the lease",
    )
    assert _started_acting(first)
    assert not _started_acting(second), second.tail()

    first.stop()  # SIGTERM: kopf stops, the lease is released
    second.wait_until(
        lambda: lease_holder(admin_api) == "replica-b", 30, "replica-b to take the lease"
    )
    name = "after-handover"
    apply(admin_api, sandbox_manifest(name, tenant, resources=RESOURCES))
    second.wait_until(
        lambda: _ready(get(admin_api, "Sandbox", name, tenant_namespace(tenant)) or {}),
        60,
        "the new leader to provision a sandbox",
    )


def test_killing_the_leader_mid_batch_provisions_every_sandbox_exactly_once(
    admin_api: client.ApiClient,
    replicas: Callable[..., OperatorProcess],
    tenant: str,
    audit_entries: Callable[[], list[dict[str, Any]]],
) -> None:
    leader = replicas("replica-a", lease_seconds=5)
    leader.wait_until(lambda: lease_holder(admin_api) == "replica-a", 60, "replica-a to lead")
    standby = replicas("replica-b", lease_seconds=5)
    home = tenant_namespace(tenant)
    leader.wait_until(lambda: get(admin_api, "Namespace", home), 60, "the tenant namespace")
    standby.wait_until(
        lambda: "waiting for lease" in standby.log.read_text(errors="replace"),
        30,
        "replica-b to wait for the lease",
    )
    names = [f"batch-{i:02d}" for i in range(SANDBOXES)]
    for name in names:
        apply(admin_api, sandbox_manifest(name, tenant, resources=RESOURCES))

    # Kill -9 once the leader has provisioned a few: the batch is then in mid-flight.
    leader.wait_until(
        lambda: sum(map(_ready, _sandboxes(admin_api, tenant))) >= 3, 120, "3 sandboxes Ready"
    )
    leader.kill()
    unfinished = SANDBOXES - sum(map(_ready, _sandboxes(admin_api, tenant)))
    assert unfinished > 0, "the leader finished the batch before it was killed"

    standby.wait_until(lambda: lease_holder(admin_api) == "replica-b", 60, "replica-b to take over")
    standby.wait_until(
        lambda: all(map(_ready, _sandboxes(admin_api, tenant))), 300, "every sandbox Ready"
    )

    sandboxes = {s["metadata"]["name"]: s for s in _sandboxes(admin_api, tenant)}
    assert sorted(sandboxes) == names
    key_ids = {name: s["status"]["keyId"] for name, s in sandboxes.items()}
    assert len(set(key_ids.values())) == SANDBOXES, "two sandboxes share a key"

    # Exactly one wrapped key (one Secret) per sandbox, none left over from a retry.
    secrets = list_objects(admin_api, "Secret", SYSTEM_NS)
    ids = Counter(
        (s["metadata"].get("annotations") or {}).get("regsandbox.io/sandbox-id") for s in secrets
    )
    for name in names:
        assert ids[sandbox_id(tenant, name)] == 1, name

    # One sandbox.provisioned record per sandbox, naming the key the sandbox uses.
    def provisioned() -> list[dict[str, Any]]:
        return [
            e
            for e in audit_entries()
            if e["action"] == "sandbox.provisioned" and e["resource"].get("tenant") == tenant
        ]

    _wait(lambda: len(provisioned()) >= SANDBOXES, 30, "the provisioning records")
    records = provisioned()
    per_sandbox = Counter(e["resource"]["sandbox"] for e in records)
    assert set(per_sandbox) == set(names)
    for entry in records:
        assert entry["details"]["keyId"] == key_ids[entry["resource"]["sandbox"]]
    # A leader killed after the log took a sandbox.provisioned entry but before Ready
    # was written: the new leader records it again with the same event id, and the log
    # keeps the one entry it has.
    assert sorted(n for n, c in per_sandbox.items() if c > 1) == []
    # And one sandbox.provisioning (the intent logged before anything is created): the
    # new leader decides again from the object the killed one read, and derives the
    # same event id.
    intents = Counter(
        e["resource"]["sandbox"]
        for e in audit_entries()
        if e["action"] == "sandbox.provisioning" and e["resource"].get("tenant") == tenant
    )
    assert set(intents) == set(names)
    assert sorted(n for n, c in intents.items() if c > 1) == []


ELECTION_ATTACKS = [
    ("update", "kube-controller-manager", "kube-system"),
    ("update", "kube-scheduler", "kube-system"),
    ("create", None, "kube-system"),
    ("update", "someone-elses-lease", SYSTEM_NS),
    ("delete", "regsandbox-operator", SYSTEM_NS),
    ("list", None, SYSTEM_NS),
    ("watch", None, SYSTEM_NS),
]
"""Lease writes a stolen operator token must not get: taking the control plane's own
leader elections (or another component's in its namespace), or hiding the election."""


def _allowed(api: client.ApiClient, verb: str, name: str | None, namespace: str) -> bool:
    review = client.AuthorizationV1Api(api).create_subject_access_review(
        client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{SYSTEM_NS}:regsandbox-operator",
                groups=["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM_NS}"],
                resource_attributes=client.V1ResourceAttributes(
                    group="coordination.k8s.io",
                    resource="leases",
                    verb=verb,
                    name=name,
                    namespace=namespace,
                ),
            )
        )
    )
    return bool(review.status.allowed)


def test_the_election_rights_reach_one_lease_in_the_operator_namespace(
    admin_api: client.ApiClient, ha_kubeconfig: Path
) -> None:
    for verb in ("get", "update"):
        assert _allowed(admin_api, verb, "regsandbox-operator", SYSTEM_NS), verb
    assert _allowed(admin_api, "create", None, SYSTEM_NS)
    granted = [a for a in ELECTION_ATTACKS if _allowed(admin_api, *a)]
    assert granted == []


def test_a_leader_that_cannot_renew_stops_acting_before_its_lease_runs_out(
    admin_api: client.ApiClient,
    replicas: Callable[..., OperatorProcess],
) -> None:
    leader = replicas("replica-a", lease_seconds=6)
    leader.wait_until(lambda: lease_holder(admin_api) == "replica-a", 60, "replica-a to lead")
    leader.wait_until(lambda: _started_acting(leader), 30, "replica-a to act")
    rbac = client.RbacAuthorizationV1Api(admin_api)
    rbac.delete_namespaced_role_binding(LEADER_ELECTION_ROLE, SYSTEM_NS)  # renewals now 403
    try:
        _wait(lambda: not leader.alive(), 30, "the leader to exit")
        assert leader.proc is not None
        assert leader.proc.returncode == LEADERSHIP_LOST_EXIT
        assert "lost lease" in leader.log.read_text(errors="replace")
        # It could not release the lease either: a standby takes it once it expires,
        # later than the renew deadline at which this leader stopped.
        lease = client.CoordinationV1Api(admin_api).read_namespaced_lease(
            LEADER_ELECTION_LEASE, SYSTEM_NS
        )
        assert lease.spec.holder_identity == "replica-a"
    finally:
        install_operator_rbac(admin_api, SYSTEM_NS)
