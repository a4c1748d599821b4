"""The chart's ServiceMonitor and PrometheusRule: off by default, valid when on, and
pointing at what the components really serve.

- Off by default: nothing of monitoring.coreos.com is rendered (a cluster without
  prometheus-operator installs the chart as before), and the render stays a pure
  function of the values.
- On: every object passes the API server's strict dry run, the monitoring kinds
  against prometheus-operator's own CRDs (``crds/``, vendored unmodified from a release).
- The ServiceMonitor selects exactly the three metrics Services; each Service selects
  one component's pods and targets a container port that serves ``/metrics``.
- Every series an alert uses is one the components export, and the platform
  engineers' guide documents every series they export.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from kubernetes import client
from prometheus_client import REGISTRY, CollectorRegistry

from audit.metrics import HttpMetrics, LogMetrics
from audit.read_server import ReadServerProcess
from audit.service import ServiceMetrics
from audit.witnessing import WitnessingMetrics
from sandbox.kube.apply import apply
from sandbox.testing import install_crds
from tests.integration.test_chart_gitops import _dry_run, _render

ON = (
    "metrics.serviceMonitor.enabled=true",
    "metrics.prometheusRule.enabled=true",
    "metrics.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=monitoring",
)
NAMESPACE = "chart-monitoring"


def _docs(repo_root: Path, *assignments: str) -> list[dict[str, Any]]:
    text = _render(repo_root / "charts/regsandbox", NAMESPACE, *assignments)
    return [d for d in yaml.safe_load_all(text) if d]


def _named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_monitoring_is_off_by_default(repo_root: Path) -> None:
    docs = _docs(repo_root)
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [n for n in _named(docs, "Service") if n.endswith("-metrics")]
    # The gateway serves its metrics anyway, on a port of their own.
    gateway = _named(docs, "Deployment")["rs-gateway"]["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    assert {"name": "metrics", "containerPort": 9090} in container["ports"]
    assert "0.0.0.0:9090" in container["args"]


def test_monitoring_renders_identically_twice(repo_root: Path) -> None:
    chart = repo_root / "charts/regsandbox"
    assert _render(chart, NAMESPACE, *ON) == _render(chart, NAMESPACE, *ON)


@pytest.mark.integration
def test_every_object_passes_the_dry_run_with_monitoring_on(
    admin_api: client.ApiClient, repo_root: Path
) -> None:
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")
    install_crds(admin_api, Path(__file__).parent / "crds")
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    docs = _docs(repo_root, *ON)
    kinds = {d["kind"] for d in docs}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    refused = [r for d in docs if (r := _dry_run(admin_api, d))]
    assert refused == []


@pytest.mark.integration
def test_a_mistyped_alert_is_refused_by_the_dry_run(
    admin_api: client.ApiClient, repo_root: Path
) -> None:
    """prometheus-operator's CRDs refuse a malformed duration and an unknown rule field
    (the dry run has teeth)."""
    install_crds(admin_api, Path(__file__).parent / "crds")
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    rule = _named(_docs(repo_root, *ON), "PrometheusRule")["rs"]
    rule["spec"]["groups"][0]["rules"][0]["for"] = "one minute"
    assert _dry_run(admin_api, rule)
    rule["spec"]["groups"][0]["rules"][0]["for"] = "1m"
    rule["spec"]["groups"][0]["rules"][0]["severity"] = "critical"
    assert _dry_run(admin_api, rule)


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_the_service_monitor_reaches_each_component_metrics_port(repo_root: Path) -> None:
    docs = _docs(repo_root, *ON)
    services = _named(docs, "Service")
    monitor = _named(docs, "ServiceMonitor")["rs"]
    selected = {
        name
        for name, svc in services.items()
        if _matches(monitor["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    }
    assert selected == {"rs-operator-metrics", "rs-gateway-metrics", "rs-audit-metrics"}
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    serving = {"operator": "metrics", "gateway": "metrics", "audit": "http"}
    for name in selected:
        svc = services[name]
        port = svc["spec"]["ports"][0]
        assert port["name"] == "metrics"
        pods = [
            w
            for w in workloads
            if _matches(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(pods) == 1, name
        component = svc["spec"]["selector"]["app.kubernetes.io/component"]
        ports = {
            p["name"]: p["containerPort"]
            for c in pods[0]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        assert port["targetPort"] == serving[component], name
        assert port["port"] == ports[port["targetPort"]], name
    # Prometheus gets in on exactly those ports.
    scrape = _named(docs, "NetworkPolicy")["rs-metrics-scrape"]["spec"]["ingress"][0]
    assert {p["port"] for p in scrape["ports"]} == {9090, 8080}


def _exported() -> set[str]:
    """Every sample name the operator, the gateway and the audit service can export."""
    import operators.metrics  # noqa: F401 - registers the operator's metrics
    from sandbox.gateway.metrics import instrument

    instrument(FastAPI())  # the gateway's HTTP metrics exist once an app is instrumented
    audit = ServiceMetrics()
    HttpMetrics(audit.registry, "regsandbox_audit")
    LogMetrics(audit.registry, lambda: 1, lambda: 1, cosignatures=lambda: {"w": 0.0})
    WitnessingMetrics(audit.registry)
    ReadServerProcess(["true"], "http://127.0.0.1:1/healthz", audit.registry)  # not started
    names: set[str] = set()
    registry: CollectorRegistry
    for registry in (REGISTRY, audit.registry):
        for family in registry.collect():
            if not family.name.startswith("regsandbox_"):
                continue
            suffixes = {
                "counter": ("_total",),
                "histogram": ("_bucket", "_count", "_sum"),
            }.get(family.type, ("",))
            names.update(family.name + s for s in suffixes)
    return names


def test_every_alert_uses_series_the_components_export(repo_root: Path) -> None:
    rule = _named(_docs(repo_root, *ON), "PrometheusRule")["rs"]
    exported = _exported()
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    assert {a["alert"] for a in alerts} >= {
        "RegsandboxCheckpointStale",
        "RegsandboxAuditUnavailable",
        "RegsandboxDriftCorrected",
        "RegsandboxPolicyRejected",
        "RegsandboxOperatorLeaderMissing",
    }
    for alert in alerts:
        used = set(re.findall(r"\bregsandbox_[a-z_]+", alert["expr"]))
        assert used, alert["alert"]
        assert used <= exported, (alert["alert"], used - exported)


def test_the_guide_documents_every_series_and_alert(repo_root: Path) -> None:
    guide = (repo_root / "docs/platform-engineers.md").read_text()
    families = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in _exported()}
    missing = sorted(f for f in families if f"`{f}" not in guide)
    assert missing == []
    rule = _named(_docs(repo_root, *ON), "PrometheusRule")["rs"]
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert f"`{alert['alert']}`" in guide, alert["alert"]


def test_a_witness_that_never_cosigned_ages_from_the_service_start() -> None:
    """Else a witness that never answers would have no age series, and the
    RegsandboxWitnessCosignatureStale alert could never fire for it."""
    now = [1_000.0]
    registry = CollectorRegistry()
    cosigned: dict[str, float | None] = {"never": None, "once": 1_500.0}
    LogMetrics(
        registry, lambda: 1, lambda: 1, cosignatures=lambda: cosigned, wall_clock=lambda: now[0]
    )
    now[0] = 4_700.0
    ages = {
        s.labels["witness"]: s.value
        for family in registry.collect()
        if family.name == "regsandbox_audit_witness_cosignature_age_seconds"
        for s in family.samples
    }
    assert ages == {"never": 3_700.0, "once": 3_200.0}
