"""Two tenants' sandboxes that map to one namespace name never share it.

``sbx-<tenant>-<sandbox>`` is ambiguous when names hold hyphens: tenant ``T`` with
sandbox ``p-q`` and tenant ``T-p`` with sandbox ``q`` are both ``sbx-T-p-q``. An attacker
who owns one tenant must not land in another tenant's sandbox namespace, share its key,
or destroy it when their own sandbox ends (found by this session's security review).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get
from sandbox.provision.names import LABEL_TENANT, sandbox_namespace

from .helpers import condition, sandbox_body, unique

pytestmark = pytest.mark.integration


def _tenant(api: client.ApiClient, name: str, owner: str) -> None:
    apply(
        api,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": name},
            "spec": {
                "organisation": f"Org {name}",
                "sector": "finance",
                "jurisdiction": "LU",
                "members": [{"user": owner, "role": "owner"}],
                "attestations": {"supervisoryAuthority": "CSSF"},
            },
        },
    )


def _ready(api: client.ApiClient, name: str, ns: str) -> dict[str, Any] | None:
    return condition(get(api, "Sandbox", name, ns), "Ready")


def test_a_second_sandbox_with_the_same_namespace_name_is_refused_and_harms_nothing(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    attacker = unique("atk")
    victim = f"{attacker}-p"  # victim "atk-…-p" / "q" and attacker "atk-…" / "p-q"
    ns = sandbox_namespace(victim, "q")
    assert ns == sandbox_namespace(attacker, "p-q")
    _tenant(admin_api, victim, "victim-owner")
    _tenant(admin_api, attacker, "attacker-owner")
    try:
        for tenant in (victim, attacker):
            home = f"tenant-{tenant}"
            operator.wait_until(lambda h=home: get(admin_api, "Namespace", h), 30, home)
        apply(admin_api, sandbox_body("q", victim))
        operator.wait_until(
            lambda: (_ready(admin_api, "q", f"tenant-{victim}") or {}).get("status") == "True",
            60,
            "the victim's sandbox to be Ready",
        )
        victim_status = get(admin_api, "Sandbox", "q", f"tenant-{victim}")["status"]

        apply(admin_api, sandbox_body("p-q", attacker))
        refused = operator.wait_until(
            lambda: (
                (c := _ready(admin_api, "p-q", f"tenant-{attacker}")) is not None
                and c.get("reason") == "NameTaken"
                and c
            ),
            60,
            "the attacker's sandbox to be refused",
        )
        assert refused["status"] == "False"
        assert f"belongs to sandbox q of tenant {victim}" in refused["message"]
        live = get(admin_api, "Namespace", ns)
        assert live is not None
        assert live["metadata"]["labels"][LABEL_TENANT] == victim
        # the attacker got no rights in the victim's namespace
        bindings = client.RbacAuthorizationV1Api(admin_api).list_namespaced_role_binding(ns)
        subjects = [s.name for b in bindings.items for s in (b.subjects or [])]
        assert "attacker-owner" not in subjects

        # the attacker's sandbox ends: the victim's namespace, StorageClass and key stay
        delete(admin_api, "Sandbox", "p-q", f"tenant-{attacker}")
        operator.wait_until(
            lambda: get(admin_api, "Sandbox", "p-q", f"tenant-{attacker}") is None,
            60,
            "the attacker's sandbox to be gone",
        )
        assert get(admin_api, "Namespace", ns) is not None
        assert get(admin_api, "StorageClass", victim_status["storageClass"]) is not None

        def ended() -> list[dict[str, Any]]:
            return [
                e
                for e in audit_actions()
                if e["action"] == "key.destroyed" and e["resource"].get("tenant") == attacker
            ]

        # the log shows an entry once a checkpoint covers it
        operator.wait_until(ended, 30, "the attacker sandbox's end on record")
        assert all(e["details"]["outcome"] == "absent" for e in ended())
        assert not [
            e
            for e in audit_actions()
            if e["action"] == "key.destroyed" and e["resource"].get("tenant") == victim
        ]
        # the victim keeps working: a later reconcile finds its key and stays Ready
        apply(admin_api, sandbox_body("q", victim, purpose="fraud-detection-v2"))
        operator.wait_until(
            lambda: (
                ((get(admin_api, "Sandbox", "q", f"tenant-{victim}") or {}).get("status", {})).get(
                    "observedGeneration", 0
                )
                >= 2
            ),
            60,
            "the victim's sandbox to be reconciled again",
        )
        assert (_ready(admin_api, "q", f"tenant-{victim}") or {}).get("status") == "True"
    finally:
        delete(admin_api, "Sandbox", "p-q", f"tenant-{attacker}")
        delete(admin_api, "Sandbox", "q", f"tenant-{victim}")
        for tenant in (attacker, victim):
            delete(admin_api, "Tenant", tenant)
