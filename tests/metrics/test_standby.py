"""A standby operator replica serves /metrics too, and says it is not the leader.

Before, only the leader served metrics (the server started with kopf, after the
election), so a dead leader looked the same as a healthy standby: silence. Now
``regsandbox_operator_leader`` is 0 on a standby and 1 on the replica that acts, so
"no replica leads" is an alert (``max(regsandbox_operator_leader) < 1``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.devenv.processes import free_port
from sandbox.devenv.toolchain import tool_path
from sandbox.provision.rbac import LEADER_ELECTION_LEASE
from tests.ha.conftest import SYSTEM_NS, drop_lease, lease_holder

from .promtext import Scrape, scrape

pytestmark = pytest.mark.integration


def _hold_lease_elsewhere(api: client.ApiClient) -> None:
    """A Lease held by a replica that is not running, for an hour (the standby waits)."""
    now = dt.datetime.now(dt.UTC)
    client.CoordinationV1Api(api).create_namespaced_lease(
        SYSTEM_NS,
        client.V1Lease(
            metadata=client.V1ObjectMeta(name=LEADER_ELECTION_LEASE),
            spec=client.V1LeaseSpec(
                holder_identity="elsewhere",
                lease_duration_seconds=3600,
                acquire_time=now,
                renew_time=now,
            ),
        ),
    )


@pytest.fixture
def standby(
    admin_api: client.ApiClient,
    cluster_to_ourselves: None,
    ha_kubeconfig: Path,
    audit_log: tuple[Path, Path],
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, str]]:
    """One electing replica, started while another identity holds the Lease."""
    drop_lease(admin_api)
    _hold_lease_elsewhere(admin_api)
    port = free_port()
    log, key = audit_log
    env = {
        "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
        "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
        "REGSANDBOX_NAMESPACE": SYSTEM_NS,
        "REGSANDBOX_AUDIT_LOG_DIR": str(log),
        "REGSANDBOX_AUDIT_SIGNING_KEY": str(key),
        "REGSANDBOX_METRICS_PORT": str(port),
        "REGSANDBOX_OPA_CHECK_BINARY": str(tool_path("opa")),
        "REGSANDBOX_LEADER_ELECTION": "true",
        "REGSANDBOX_LEADER_ELECTION_IDENTITY": "standby-1",
        "REGSANDBOX_LEADER_ELECTION_LEASE_SECONDS": "3",
        "REGSANDBOX_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "2",
        "REGSANDBOX_LEADER_ELECTION_RETRY_SECONDS": "0.5",
    }
    proc = OperatorProcess(ha_kubeconfig, env, tmp_path / "standby.log").start()
    try:
        yield proc, f"http://127.0.0.1:{port}/metrics"
    finally:
        proc.stop()
        drop_lease(admin_api)


def _leader_gauge(url: str, want: float) -> Scrape | None:
    try:
        found = scrape(url)
    except httpx.HTTPError:
        return None
    return (
        found
        if found.has("regsandbox_operator_leader")
        and found.value("regsandbox_operator_leader") == want
        else None
    )


def test_a_standby_serves_metrics_and_the_leader_gauge_follows_the_lease(
    admin_api: client.ApiClient, standby: tuple[OperatorProcess, str]
) -> None:
    proc, url = standby
    waiting = proc.wait_until(lambda: _leader_gauge(url, 0.0), 60, "a standby's metrics")
    assert lease_holder(admin_api) == "elsewhere"
    # A standby reconciles nothing, but its counters are there to be scraped.
    assert "regsandbox_reconciles_total" in waiting.text
    drop_lease(admin_api)  # the holder is gone: the standby takes over
    proc.wait_until(lambda: _leader_gauge(url, 1.0), 30, "the new leader's gauge at 1")
    assert lease_holder(admin_api) == "standby-1"
