"""Prometheus metrics of the gateway, served on their own port (``--metrics-listen``).

They live in the process's default registry, as the operator's do
(:mod:`operators.metrics`), and are served apart from the API port on purpose: sandbox
workloads reach the API port, and the request rates of other sandboxes are none of their
business. Labels are bounded: route templates (``/v1/datasets/{dataset}/objects/{key:path}``,
``s3`` for the S3 and STS surface), never paths, datasets or tenants; refusal reasons are
the gateway's own CamelCase codes.

- ``regsandbox_gateway_http_*``: requests by route, method and code, their duration, body
  bytes sent and received (:class:`audit.metrics.HttpMetrics`);
- ``regsandbox_gateway_refusals_total{reason,code}``: refused requests, including
  conditional reads whose condition is false (``NotModified`` 304,
  ``PreconditionFailed`` 412), which send no data and are logged as refused;
- ``regsandbox_gateway_audit_unavailable_total``: 503s answered because the audit log
  refused the request's record (nothing was sent or stored);
- ``regsandbox_gateway_audit_append_seconds`` and
  ``regsandbox_gateway_audit_append_failures_total``: the gateway's appends to the log;
- ``regsandbox_gateway_streams_aborted_total{reason}``: streamed reads cut off.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from starlette.applications import Starlette
from starlette.types import Scope

from audit.metrics import APPEND_BUCKETS, HttpMetrics

if TYPE_CHECKING:
    from sandbox.gateway.s3api import S3Surface

__all__ = [
    "APPEND_FAILURES",
    "APPEND_SECONDS",
    "AUDIT_UNAVAILABLE",
    "REFUSALS",
    "STREAMS_ABORTED",
    "count_refusal",
    "instrument",
    "serve_metrics",
]

REFUSALS = Counter(
    "regsandbox_gateway_refusals",
    "Requests refused (and logged as refused), by reason code and HTTP status; "
    "conditional reads answered 304 NotModified or 412 PreconditionFailed included.",
    ["reason", "code"],
)
AUDIT_UNAVAILABLE = Counter(
    "regsandbox_gateway_audit_unavailable",
    "Requests answered 503 because the audit log did not make their record durable; "
    "nothing was sent or stored.",
)
APPEND_SECONDS = Histogram(
    "regsandbox_gateway_audit_append_seconds",
    "Time for one of the gateway's audit records to become durable (successful appends).",
    buckets=APPEND_BUCKETS,
)
APPEND_FAILURES = Counter(
    "regsandbox_gateway_audit_append_failures",
    "Appends of the gateway's audit records the audit log refused or did not answer.",
)
STREAMS_ABORTED = Counter(
    "regsandbox_gateway_streams_aborted",
    "Streamed reads cut off before their last byte: AuditUnavailable (the completion "
    "record was refused, so the last chunk was never sent) or StorageUnavailable.",
    ["reason"],
)

_HTTP: HttpMetrics | None = None
_REASON = re.compile(r"^[A-Z][A-Za-z0-9]{0,63}$")


def count_refusal(reason: str, code: int) -> None:
    """Count a refusal; a reason that is not a CamelCase code is counted as ``Other``."""
    REFUSALS.labels(reason if _REASON.match(reason) else "Other", str(code)).inc()


def instrument(app: Starlette, s3: S3Surface | None = None) -> None:
    """Count every request ``app`` answers in ``regsandbox_gateway_http_*``.

    Requests the S3 surface ``s3`` takes are counted as route ``s3``.
    """
    global _HTTP
    if _HTTP is None:
        _HTTP = HttpMetrics(REGISTRY, "regsandbox_gateway")

    def classify(scope: Scope) -> str | None:
        return "s3" if s3 is not None and s3.wants(scope) else None

    _HTTP.install(app, classify)


def serve_metrics(host: str, port: int) -> None:
    """Serve the default registry at ``http://host:port/metrics`` (a daemon thread)."""
    start_http_server(port, addr=host)
