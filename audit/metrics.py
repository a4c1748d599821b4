"""Prometheus metrics of the audit service and the gateway's HTTP layer.

Two pieces, each registered in a :class:`~prometheus_client.CollectorRegistry` given by
the caller (the audit service keeps one per app; the gateway uses the default one):

- :class:`HttpMetrics`, an ASGI middleware counting requests by *route template* (e.g.
  ``/v1/entries/{index}``, never the path a client sent), method and status code, with
  their duration and the body bytes received and sent. Label values are bounded: a
  request no route matched is ``route="unmatched"``, an unusual method ``"OTHER"``.
- :class:`LogMetrics`, what the audit service knows about its log: append latency and
  batch sizes, the log's size, the checkpoint's size and age, how long the oldest entry
  not yet in a checkpoint has waited, and the age of each witness's latest cosignature.
  The gauges are computed when scraped, from the log itself.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "APPEND_BUCKETS",
    "BATCH_BUCKETS",
    "HttpMetrics",
    "LogMetrics",
    "route_template",
]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})

APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Buckets (seconds) of append latencies: a durable append is an fsync or a round trip."""

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
"""Buckets (events) of append batch sizes, up to the service's largest batch."""

_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)


def route_template(scope: Scope) -> str | None:
    """The template of the route that handled ``scope`` (``/v1/entries/{index}``), if any.

    FastAPI and Starlette put the matched route in the scope while routing, so this is
    known once the app has been called.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


class HttpMetrics:
    """Request counters of one HTTP service, named ``<prefix>_http_*``.

    Add it to an app with :meth:`install` (outermost, so every request is counted).
    """

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        """Register the metrics as ``<prefix>_http_…`` in ``registry``."""
        self.requests = Counter(
            f"{prefix}_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "code"],
            registry=registry,
        )
        """Requests by route, method and code."""
        self.seconds = Histogram(
            f"{prefix}_http_request_seconds",
            "Time from a request's arrival to the last byte of its answer, by route template.",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=registry,
        )
        """Request durations by route."""
        self.sent = Counter(
            f"{prefix}_http_sent_bytes",
            "Response body bytes sent, by route template.",
            ["route"],
            registry=registry,
        )
        """Body bytes sent."""
        self.received = Counter(
            f"{prefix}_http_received_bytes",
            "Request body bytes received, by route template.",
            ["route"],
            registry=registry,
        )
        """Body bytes received."""

    def install(
        self, app: Starlette, classify: Callable[[Scope], str | None] | None = None
    ) -> None:
        """Count every HTTP request ``app`` answers (call before the app starts).

        ``classify`` may name the route of a request the app's router never sees (e.g.
        the gateway's S3 surface, dispatched by a middleware): it is asked first, with
        the scope, and returns a bounded name or ``None``.
        """
        app.add_middleware(_Middleware, metrics=self, classify=classify)

    def observe(
        self, route: str, method: str, code: int, seconds: float, sent: int, received: int
    ) -> None:
        """Count one answered request."""
        method = method if method in _METHODS else "OTHER"
        self.requests.labels(route, method, str(code)).inc()
        self.seconds.labels(route).observe(seconds)
        if sent:
            self.sent.labels(route).inc(sent)
        if received:
            self.received.labels(route).inc(received)


class _Middleware:
    """ASGI middleware feeding :class:`HttpMetrics` (no buffering: it only counts)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: HttpMetrics,
        classify: Callable[[Scope], str | None] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.classify = classify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        named = self.classify(scope) if self.classify else None
        counts = {"code": 0, "sent": 0, "received": 0}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                counts["received"] += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                counts["code"] = int(message["status"])
            elif message["type"] == "http.response.body":
                counts["sent"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            # A connection cut mid-answer keeps the status it started with; one that
            # never started an answer (the app raised) is counted as the 500 it becomes.
            route = named or route_template(scope) or "unmatched"
            self.metrics.observe(
                route,
                str(scope.get("method", "")),
                counts["code"] or 500,
                time.perf_counter() - started,
                counts["sent"],
                counts["received"],
            )


class LogMetrics(Collector):
    """The audit log's metrics: appends (observed by the service) and state (read on scrape).

    ``size`` and ``checkpoint_size`` read the log; ``cosignatures`` gives, for each
    witness, the POSIX time of its latest cosignature (``None`` before the first). A
    witness that has not cosigned since this service started is as old as the service
    (``wall_clock`` at construction), so a witness that never answers ages like one
    that stopped answering and the same alert fires. The
    checkpoint's age is counted from when this service first saw it (for a log it
    recovered, from its start): a log signs a new checkpoint only once entries are
    waiting, so an idle log's checkpoint rightly grows old. What signals a stuck log is
    :attr:`pending_seconds`: how long the oldest entry not yet in a checkpoint has waited.
    """

    MAX_MARKS = 4096
    """Most append batches remembered while waiting for a checkpoint (older ones are kept)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        size: Callable[[], int],
        checkpoint_size: Callable[[], int],
        cosignatures: Callable[[], Mapping[str, float | None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        """Register the append metrics and this collector in ``registry``."""
        self._wall_clock = wall_clock
        self._started = wall_clock()
        self._size = size
        self._checkpoint_size = checkpoint_size
        self._cosignatures = cosignatures
        self._clock = clock
        self._marks: deque[tuple[int, float]] = deque()
        self._seen_checkpoint: tuple[int, float] | None = None
        self.append_seconds = Histogram(
            "regsandbox_audit_append_seconds",
            "Time for a batch of events to become durable in the log (answered appends).",
            buckets=APPEND_BUCKETS,
            registry=registry,
        )
        """Durable-append latency."""
        self.batch_events = Histogram(
            "regsandbox_audit_append_batch_events",
            "Events per appended batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        """Batch sizes."""
        registry.register(self)

    def appended(self, events: int, seconds: float, size: int) -> None:
        """Record a batch of ``events`` made durable in ``seconds``; the log now has ``size``."""
        self.append_seconds.observe(seconds)
        self.batch_events.observe(events)
        if len(self._marks) < self.MAX_MARKS:
            self._marks.append((size, self._clock()))

    def pending_seconds(self, checkpoint_size: int) -> float:
        """How long the oldest entry past ``checkpoint_size`` has waited (0 if none)."""
        while self._marks and self._marks[0][0] <= checkpoint_size:
            self._marks.popleft()
        if not self._marks:
            return 0.0
        return max(0.0, self._clock() - self._marks[0][1])

    def checkpoint_age(self, checkpoint_size: int) -> float:
        """Seconds since this service first saw a checkpoint of ``checkpoint_size``."""
        now = self._clock()
        if self._seen_checkpoint is None or self._seen_checkpoint[0] != checkpoint_size:
            self._seen_checkpoint = (checkpoint_size, now)
        return now - self._seen_checkpoint[1]

    def describe(self) -> Iterable[Metric]:
        """The gauges' names (so the registry can check for clashes without a scrape)."""
        return list(self._gauges(describe=True))

    def collect(self) -> Iterable[Metric]:
        """The gauges, read from the log now."""
        return list(self._gauges(describe=False))

    def _gauges(self, *, describe: bool) -> Iterable[Metric]:
        entries = GaugeMetricFamily(
            "regsandbox_audit_log_entries", "Durable entries in the log (its size)."
        )
        tree = GaugeMetricFamily(
            "regsandbox_audit_checkpoint_tree_size", "Tree size of the latest signed checkpoint."
        )
        age = GaugeMetricFamily(
            "regsandbox_audit_checkpoint_age_seconds",
            "Seconds since this service first saw the latest signed checkpoint.",
        )
        pending = GaugeMetricFamily(
            "regsandbox_audit_checkpoint_pending_seconds",
            "Seconds the oldest durable entry not yet covered by a signed checkpoint has "
            "waited; 0 when the checkpoint covers the log.",
        )
        cosigned = GaugeMetricFamily(
            "regsandbox_audit_witness_cosignature_age_seconds",
            "Seconds since each witness's latest cosignature, or since this service "
            "started for a witness that has not cosigned since.",
            labels=["witness"],
        )
        if not describe:
            checkpoint_size = self._checkpoint_size()
            entries.add_metric([], self._size())
            tree.add_metric([], checkpoint_size)
            age.add_metric([], self.checkpoint_age(checkpoint_size))
            pending.add_metric([], self.pending_seconds(checkpoint_size))
            now = self._wall_clock()
            for witness, at in (self._cosignatures() if self._cosignatures else {}).items():
                since = self._started if at is None else at
                cosigned.add_metric([witness], max(0.0, now - since))
        yield from (entries, tree, age, pending)
        if self._cosignatures is not None:
            yield cosigned
