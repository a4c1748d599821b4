"""The operator serves Prometheus metrics: reconciles, failures and decision latency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get

from .conftest import METRICS_PORT
from .helpers import condition, ready_sandbox, sandbox_body, unique

pytestmark = pytest.mark.integration


def test_metrics_count_reconciles_and_time_decisions(
    admin_api: client.ApiClient, operator: OperatorProcess, tenant_factory: Callable[..., str]
) -> None:
    ready_sandbox(admin_api, operator, tenant_factory())
    # And one reconcile that cannot finish: a Sandbox outside any tenant's home.
    stray = unique("stray")
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": stray}})
    body = sandbox_body("lost", "x")
    body["metadata"]["namespace"] = stray
    apply(admin_api, body)

    def refused() -> dict[str, Any] | None:
        cond = condition(get(admin_api, "Sandbox", "lost", stray), "Ready")
        return cond if cond and cond["reason"] == "TenantNotFound" else None

    operator.wait_until(refused, 30, "Ready=False/TenantNotFound")
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).text
    delete(admin_api, "Sandbox", "lost", stray)
    delete(admin_api, "Namespace", stray)
    reconciles = [
        line
        for line in text.splitlines()
        if line.startswith('regsandbox_reconciles_total{kind="Sandbox",step="provision"}')
    ]
    assert reconciles, text[:2000]
    assert float(reconciles[0].split()[-1]) >= 1
    assert 'regsandbox_policy_decision_seconds_count{action="sandbox.provision"}' in text
    failures = [
        line
        for line in text.splitlines()
        if line.startswith(
            'regsandbox_reconcile_failures_total{kind="Sandbox",reason="namespace \'stray-'
        )
    ]
    assert failures, text[:3000]
    assert float(failures[0].split()[-1]) >= 1
