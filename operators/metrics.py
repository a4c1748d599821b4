"""Prometheus metrics of the operator, served on ``REGSANDBOX_METRICS_PORT`` (9090).

Every replica serves them, the standbys too (:func:`serve` is called before the leader
election): ``regsandbox_operator_leader`` says which replica acts, so "no leader" is an
alert and not a silence.
"""

from __future__ import annotations

import re
import threading

from prometheus_client import Counter, Gauge, Histogram, start_http_server

__all__ = [
    "DECISION_SECONDS",
    "EVENTS",
    "LEADER",
    "RECONCILES",
    "RECONCILE_FAILURES",
    "bounded_reason",
    "serve",
]

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
EVENTS = Counter(
    "regsandbox_events_total",
    "Kubernetes Events the operator posted on its objects, by kind, type and reason "
    "(e.g. DriftCorrected, PolicyDenied, InvalidPolicy, AuditLogUnavailable).",
    ["kind", "type", "reason"],
)
LEADER = Gauge(
    "regsandbox_operator_leader",
    "1 while this replica holds the leader Lease and acts, 0 while it waits as a standby "
    "(1 without leader election).",
)

_REASON = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")
_served = threading.Lock()
_serving: set[tuple[str, int]] = set()


def bounded_reason(reason: str, default: str = "Other") -> str:
    """``reason`` if it is a CamelCase code, else ``default`` (labels stay few)."""
    return reason if _REASON.match(reason) else default


def serve(host: str, port: int) -> None:
    """Serve the metrics at ``http://host:port/metrics``, once per process (a daemon thread)."""
    with _served:
        if (host, port) in _serving:
            return
        start_http_server(port, addr=host)
        _serving.add((host, port))
