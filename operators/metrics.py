"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["DECISION_SECONDS", "RECONCILES", "RECONCILE_FAILURES"]

RECONCILES = Counter(
    "regsandbox_reconciles_total", "Reconciles run, by kind and step.", ["kind", "step"]
)
RECONCILE_FAILURES = Counter(
    "regsandbox_reconcile_failures_total",
    "Reconciles that ended unfinished (retried), by kind, step and reason.",
    ["kind", "step", "reason"],
)
DECISION_SECONDS = Histogram(
    "regsandbox_policy_decision_seconds",
    "Policy decision latency, by action.",
    ["action"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
