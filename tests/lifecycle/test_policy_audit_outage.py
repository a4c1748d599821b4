"""A SandboxPolicy while the audit service is down: nothing in force, then in force soon.

Accepting a policy is recorded (``sandbox_policy.accepted``) before the policy takes
effect, so with the service down the operator must neither accept it nor apply it (fail
closed). When the service is back, the operator must not sit out kopf's default one-minute
back-off: the audit log is usually back within seconds (a restart, a rollout), and a
policy the platform engineer just applied should then be in force within a few retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get
from tests.real_audit import RealAuditService

from .conftest import SYSTEM_NS, operator_env
from .helpers import condition, unique

pytestmark = pytest.mark.integration

_KOPF_DEFAULT_BACKOFF = 60.0
"""kopf's retry delay after an arbitrary error — what the operator must not wait for."""


@pytest.fixture
def operator_with_audit_service(
    operator: OperatorProcess,
    operator_kubeconfig: Path,
    audit_dir: tuple[Path, Path],
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, RealAuditService]]:
    """An operator appending to a real (not yet started) audit service over HTTP.

    The session's operator is stopped meanwhile (two operators must never act on the same
    objects) and started again afterwards.
    """
    service = RealAuditService(
        tmp_path / "audit",
        "audit.regsandbox.test/policy-outage",
        f"system:serviceaccount:{SYSTEM_NS}:regsandbox-operator",
    )
    env = operator_env(audit_dir)
    for local in ("REGSANDBOX_AUDIT_LOG_DIR", "REGSANDBOX_AUDIT_SIGNING_KEY"):
        del env[local]
    env |= {
        "REGSANDBOX_AUDIT_URL": service.url,
        "REGSANDBOX_AUDIT_TOKEN_FILE": str(service.token_file),
    }
    operator.stop()
    proc = OperatorProcess(operator_kubeconfig, env, tmp_path / "operator.log").start()
    try:
        yield proc, service
    finally:
        proc.stop()
        service.stop()
        operator.start()


def _accepted(api: client.ApiClient, name: str) -> dict[str, Any] | None:
    cond = condition(get(api, "SandboxPolicy", name), "Accepted")
    return cond if cond and cond.get("status") == "True" else None


def test_a_policy_applied_while_the_audit_log_is_down_is_in_force_seconds_after_it_returns(
    admin_api: client.ApiClient,
    operator_with_audit_service: tuple[OperatorProcess, RealAuditService],
) -> None:
    proc, service = operator_with_audit_service
    name = unique("pol")
    apply(
        admin_api,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "SandboxPolicy",
            "metadata": {"name": name},
            "spec": {
                "rego": f"package custom.{name.replace('-', '_')}\n\nviolations := set()\n",
                "enforcement": "warn",
            },
        },
    )
    try:
        # Fail closed: the operator tries (its log says the audit log is unavailable)
        # and accepts nothing while it cannot record the acceptance.
        proc.wait_until(
            lambda: "audit service at" in proc.tail(200),
            60,
            "the operator to try and find the audit log unavailable",
        )
        assert _accepted(admin_api, name) is None

        service.start()
        # Within a few of the operator's 5-second retries (operators.handlers), far below
        # kopf's one-minute default back-off.
        bound = 25.0
        assert bound < _KOPF_DEFAULT_BACKOFF / 2
        cond = proc.wait_until(
            lambda: _accepted(admin_api, name), bound, "the policy to be accepted"
        )
        assert cond["status"] == "True"

        # Recorded once, before it took effect (the operator may log other policies it
        # resumed; the service's checkpoint follows an append within a second).
        def recorded() -> list[str]:
            return [
                e.resource.name
                for e in service.entries()
                if e.action == "policy.changed" and e.resource.name == name
            ]

        assert proc.wait_until(recorded, 15, "the acceptance in the log") == [name]
    finally:
        delete(admin_api, "SandboxPolicy", name)
