"""The operator's own log lines carry the id of the reconcile that logged them, the id its
audit entries carry as ``request_id`` (issue 19: "request ids that also appear in the
audit entries they caused").

Against the session's real operator process and control plane: a Sandbox is provisioned;
the line the key provider logs when it creates the sandbox's key names the reconcile by
``request_id``, and that id is the ``request_id`` of the sandbox's provisioning entries
in the audit log. Lines of other reconciles carry other ids, or none.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import get

from .helpers import ready_sandbox

pytestmark = pytest.mark.integration


def _lines(operator: OperatorProcess) -> list[dict[str, Any]]:
    lines = []
    for raw in operator.log.read_text(errors="replace").splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict):
            lines.append(line)
    return lines


def test_a_reconciles_log_lines_and_audit_entries_share_its_id(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory()
    name, _ = ready_sandbox(admin_api, operator, tenant)
    key_id = (get(admin_api, "Sandbox", name, f"tenant-{tenant}") or {})["status"]["keyId"]

    def key_line() -> dict[str, Any] | None:
        found = [
            d
            for d in _lines(operator)
            if d.get("event") == "key.created" and d.get("key_id") == key_id
        ]
        return found[0] if found else None

    line = operator.wait_until(key_line, 15, f"the key.created line of {key_id}")
    reconcile_id = line.get("request_id")
    assert reconcile_id, line

    def entries() -> list[dict[str, Any]] | None:
        mine = [e for e in audit_actions() if e.get("request_id") == reconcile_id]
        return mine if any(e["action"] == "sandbox.provisioned" for e in mine) else None

    caused = operator.wait_until(entries, 30, f"the audit entries of reconcile {reconcile_id}")
    assert {e["resource"]["name"] for e in caused} <= {name, key_id}, caused
    assert {"sandbox.provisioning", "sandbox.provisioned"} <= {e["action"] for e in caused}

    # Each reconcile has its own id: the tenant's reconcile, logged earlier, is not this one.
    tenant_ids = {e["request_id"] for e in audit_actions() if e["resource"].get("name") == tenant}
    assert reconcile_id not in tenant_ids
    # Lines with this id all come from this reconcile (the binding ends with it).
    for other in _lines(operator):
        if other.get("request_id") == reconcile_id:
            about = (other.get("sandbox"), (other.get("object") or {}).get("name"))
            assert line["sandbox"] in about or name in about, other
