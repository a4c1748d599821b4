"""After a demo-like workload, the operator, the gateway and the audit service expose the
series a platform engineer alerts on, with bounded labels and real values.

The workload is the demo's tour on the stack of processes (``make demo MODE=processes``):
a sandbox provisioned and one refused by policy, reads through the gateway and a
refused one, a model written into the outbox and exported. Then the audit service is
stopped: the gateway answers 503 — and counts it — instead of sending unlogged data.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from sandbox.devenv.demo import run_tour
from sandbox.devenv.stack import Stack, StackSettings, running_stack
from sandbox.devenv.workload import TokenWorkload
from sandbox.gateway.settings import AUDIENCE
from sandbox.kube.apply import apply, get

from .promtext import Scrape, scrape

pytestmark = pytest.mark.integration

_OBJECTS = "/v1/datasets/{dataset}/objects"
_OBJECT = "/v1/datasets/{dataset}/objects/{key:path}"


@pytest.fixture(scope="module")
def toured(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack of processes after the demo's tour."""
    settings = StackSettings(directory=tmp_path_factory.mktemp("stack"), repo=repo_root)
    with running_stack(settings) as stack:
        run_tour(stack, repo_root)
        yield stack


def test_the_gateway_counts_reads_refusals_bytes_and_audit_appends(toured: Stack) -> None:
    gw = scrape(toured.metrics["gateway"])
    reqs = "regsandbox_gateway_http_requests_total"
    assert gw.value(reqs, route=_OBJECT, method="GET", code="200") >= 1, gw.text
    assert gw.value(reqs, route=_OBJECTS, method="GET", code="200") >= 1
    assert gw.value(reqs, route=_OBJECTS, method="GET", code="403") >= 1
    assert gw.value(reqs, route="/v1/outbox/{path:path}", method="PUT", code="201") >= 1
    assert gw.value("regsandbox_gateway_refusals_total", code="403") >= 1
    assert gw.value("regsandbox_gateway_http_sent_bytes_total", route=_OBJECT) > 0
    assert (
        gw.value("regsandbox_gateway_http_received_bytes_total", route="/v1/outbox/{path:path}") > 0
    )
    assert gw.value("regsandbox_gateway_audit_append_seconds_count") >= 4
    assert gw.has("regsandbox_gateway_audit_unavailable_total")
    _bounded(gw, "regsandbox_gateway_")


def test_the_audit_service_counts_appends_and_reports_its_log(toured: Stack) -> None:
    au = scrape(toured.metrics["audit"])
    assert (
        au.value(
            "regsandbox_audit_http_requests_total", route="/v1/entries", method="POST", code="200"
        )
        >= 1
    ), au.text
    batches = au.value("regsandbox_audit_append_batch_events_count")
    assert batches >= 1
    assert au.value("regsandbox_audit_append_batch_events_sum") >= batches
    assert au.value("regsandbox_audit_append_seconds_count") == batches
    size = au.value("regsandbox_audit_log_entries")
    assert size >= au.value("regsandbox_audit_append_batch_events_sum") > 0
    assert 0 < au.value("regsandbox_audit_checkpoint_tree_size") <= size
    assert au.has("regsandbox_audit_checkpoint_age_seconds")
    assert au.has("regsandbox_audit_checkpoint_pending_seconds")
    _bounded(au, "regsandbox_audit_")


def test_the_operator_counts_reconciles_events_and_leads(toured: Stack) -> None:
    op = scrape(toured.metrics["operator"])
    assert op.value("regsandbox_operator_leader") == 1, op.text
    assert op.value("regsandbox_reconciles_total", kind="Sandbox", step="provision") >= 1
    assert op.value("regsandbox_events_total", kind="Sandbox", reason="Provisioned") >= 1
    # The tour's sandbox that breaks residency rules is refused by policy.
    assert op.value("regsandbox_events_total", kind="Sandbox", reason="PolicyDenied") >= 1
    assert op.value("regsandbox_policy_decision_seconds_count") >= 1


def test_a_stopped_audit_service_means_503_counted_and_no_data(
    toured: Stack, repo_root: Path
) -> None:
    namespace, dataset = _granted(toured, repo_root)
    workload = _pod_workload(toured, namespace)
    path = f"/v1/datasets/{dataset}/objects"
    assert workload.get(path).status == 200
    before = scrape(toured.metrics["gateway"])
    audit = next(s for s in toured.services if s.name == "audit service")
    audit.stop()
    answer = workload.get(path)
    assert answer.status == 503, answer.text
    assert answer.json()["reason"] == "AuditUnavailable"
    assert "objects" not in answer.json()
    after = scrape(toured.metrics["gateway"])
    name = "regsandbox_gateway_audit_unavailable_total"
    assert after.value(name) == before.value(name) + 1
    reqs = "regsandbox_gateway_http_requests_total"
    assert (
        after.value(reqs, route=_OBJECTS, code="503")
        == before.value(reqs, route=_OBJECTS, code="503") + 1
    )
    assert after.value("regsandbox_gateway_audit_append_failures_total") > before.value(
        "regsandbox_gateway_audit_append_failures_total"
    )


def _granted(stack: Stack, repo: Path) -> tuple[str, str]:
    """A new Ready sandbox of the tour's bank (the tour's own has expired) and its dataset."""
    [sandbox] = yaml.safe_load_all((repo / "examples/finance/sandbox-fraud-model.yaml").read_text())
    sandbox["metadata"]["name"] = "metrics-model"
    sandbox["spec"]["lifetime"] = {"ttl": "1h"}
    apply(stack.admin, sandbox)

    def ready() -> tuple[str, str] | None:
        obj = get(stack.admin, "Sandbox", "metrics-model", sandbox["metadata"]["namespace"])
        status = (obj or {}).get("status") or {}
        granted = [d["name"] for d in status.get("datasets") or [] if d.get("granted")]
        if status.get("ready") in (True, "True") and granted:
            return str(status["namespace"]), granted[0]
        return None

    return stack.operator.wait_until(ready, 60, "a Ready sandbox with a granted dataset")


def _pod_workload(stack: Stack, namespace: str) -> TokenWorkload:
    """A workload of the sandbox: its pod ``trainer`` (created if the tour left none)."""
    core = client.CoreV1Api(stack.admin)
    try:
        pod = core.read_namespaced_pod("trainer", namespace)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        return stack.workload(namespace)
    ref = client.V1BoundObjectReference(
        kind="Pod", api_version="v1", name="trainer", uid=pod.metadata.uid
    )
    spec = client.V1TokenRequestSpec(
        audiences=[AUDIENCE], expiration_seconds=3600, bound_object_ref=ref
    )
    token = core.create_namespaced_service_account_token(
        pod.spec.service_account_name, namespace, client.AuthenticationV1TokenRequest(spec=spec)
    )
    return TokenWorkload(stack.gateway_url, str(token.status.token))


def _bounded(found: Scrape, prefix: str) -> None:
    """No label names a tenant, a sandbox, a dataset or an object: series stay few."""
    for value in found.label_values(prefix):
        assert "lux-bank" not in value, value
        assert "sbx-" not in value, value
        assert ".csv" not in value, value
