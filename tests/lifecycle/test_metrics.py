"""The operator serves Prometheus metrics: reconciles, failures and decision latency."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess

from .conftest import METRICS_PORT
from .helpers import ready_sandbox, stray_sandbox

pytestmark = pytest.mark.integration


def test_metrics_count_reconciles_and_time_decisions(
    admin_api: client.ApiClient, operator: OperatorProcess, tenant_factory: Callable[..., str]
) -> None:
    ready_sandbox(admin_api, operator, tenant_factory())
    # And one reconcile that cannot finish: a Sandbox outside any tenant's home.
    with stray_sandbox(admin_api, operator):
        text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).text
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
        if line.startswith('regsandbox_reconcile_failures_total{kind="Sandbox",')
        and 'reason="TenantNotFound"' in line
    ]
    # The reason is the Warning's code, never its message (which names the namespace).
    assert 'reason="namespace' not in text
    assert failures, text[:3000]
    assert float(failures[0].split()[-1]) >= 1
