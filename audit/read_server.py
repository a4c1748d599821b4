"""The read server: the log's reads served by a process of their own, beside the writer.

One Python process serving appends and reads shares one interpreter lock: a reader
paging through the log at full speed takes CPU the appends then lack. So the audit
service can run its reads in a second process (``sandboxctl audit serve --read-listen``),
at a lower CPU priority, where the kernel's scheduler — not the interpreter lock —
decides that appends come first:

- :class:`PublishedLog` reads the durable files through :class:`~audit.log.LogReader`,
  as of the checkpoint the writer last published (``checkpoint`` in the log directory,
  replaced atomically after the entries, hashes and offsets it covers are synced); it
  never sees the writer's memory, and an entry becomes readable here once a checkpoint
  covers it (within the writer's checkpoint interval, a second by default);
- :func:`create_read_app` serves every read route of :mod:`audit.service` (the same
  route code, :func:`audit.service.add_read_routes`) and the console, with the same
  access checks, plus a per-reader rate bound (:class:`ReaderRates`: a token bucket of
  entries per second per authenticated identity; 429 with ``Retry-After`` past it);
- :class:`ReadServerProcess` runs it from the writer's process, restarts it when it
  dies or stops answering, and shows that as the ``ReadsServed`` condition and the
  ``regsandbox_audit_read_server_*`` metrics; the writer's ``/metrics`` carries the read
  server's own (``regsandbox_audit_read_*``) so one scrape sees both.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import math
import os
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from starlette.concurrency import run_in_threadpool

from audit.access import Reader, Scope, Verb
from audit.checkpoint import Checkpoint
from audit.console import CheckpointHistory, ConsoleSettings
from audit.errors import AuditError, StorageError
from audit.log import CHECKPOINT_FILE, LogReader
from audit.merkle import verify_consistency
from audit.metrics import HttpMetrics
from audit.service import AccessPolicy, add_read_routes, authorize_read
from audit.witnessing import COSIGNED_FILE

__all__ = [
    "DEFAULT_READ_BURST",
    "DEFAULT_READ_NICE",
    "DEFAULT_READ_RATE",
    "STATUS_SECONDS",
    "PublishedLog",
    "ReadServerMetrics",
    "ReadServerProcess",
    "ReaderRates",
    "create_read_app",
    "read_server_environment",
]

DEFAULT_READ_NICE = 10
"""Nice value the read server takes (lower priority than the writer's 0)."""

DEFAULT_READ_RATE = 50_000.0
"""Entries per second one reader may read on average (0: no bound)."""

DEFAULT_READ_BURST = 20_000.0
"""Entries one reader may read at once before the rate applies (at least one range)."""

STATUS_SECONDS = 1.0
"""How long the read server reuses the writer's ``/v1/status``."""

_log = structlog.get_logger("audit.read_server")


class PublishedLog:
    """The log as its writer last published it: durable files and checkpoint, read-only.

    Thread-safe. Each :meth:`current` looks at the checkpoint file (one ``stat``) and
    reloads it when the writer has replaced it, so a new checkpoint is served as soon as
    it is on disk. Reads never go past the loaded checkpoint's size.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        """The log directory."""
        self._reader = LogReader(self.path)
        self._lock = threading.Lock()
        self._seen = self._stamp()
        self._note = self._reader.checkpoint_note
        self._checkpoint = self._reader.checkpoint
        self._refused: StorageError | None = None

    def _stamp(self) -> tuple[int, int, int]:
        st = (self.path / CHECKPOINT_FILE).stat()
        return st.st_ino, st.st_mtime_ns, st.st_size

    def current(self) -> tuple[bytes, Checkpoint]:
        """The latest published checkpoint note and checkpoint, reloaded if replaced.

        Raises :class:`~audit.errors.StorageError` (503 to readers, and ``/healthz``)
        while the checkpoint file holds one that does not extend the largest served so
        far — a smaller tree, another root, a tree the files do not prove consistent:
        a restored or tampered file is never served as the log.
        """
        try:
            stamp = self._stamp()
        except OSError as exc:
            raise StorageError(f"cannot read {self.path / CHECKPOINT_FILE}: {exc}") from exc
        if stamp != self._seen:
            with self._lock:
                if stamp != self._seen:
                    self._reload()
                    self._seen = stamp
        if self._refused is not None:
            raise self._refused
        return self._note, self._checkpoint

    def _reload(self) -> None:
        """Load the checkpoint file; accept it only if it extends the one served."""
        self._reader.refresh()
        note, new = self._reader.checkpoint_note, self._reader.checkpoint
        old = self._checkpoint
        why = None
        if new.size < old.size:
            why = f"its tree of {new.size} is smaller than the {old.size} already served"
        elif new.size == old.size and new.root != old.root:
            why = f"its root differs from the served checkpoint's of the same size {old.size}"
        elif old.size > 0 and new.size > old.size:
            try:
                proof = self._reader.consistency_proof(old.size, new.size)
                verify_consistency(old.size, new.size, proof, old.root, new.root)
            except (AuditError, IndexError) as exc:
                why = f"the log files do not prove it extends the served one: {exc}"
        if why is not None:
            if self._refused is None:
                _log.error("refusing a checkpoint that does not extend the served one", why=why)
            self._refused = StorageError(f"{self.path / CHECKPOINT_FILE} was replaced: {why}")
            return
        self._note, self._checkpoint, self._refused = note, new, None

    def cosigned(self) -> bytes | None:
        """The latest witness-cosigned checkpoint the writer stored, or ``None``."""
        try:
            return (self.path / COSIGNED_FILE).read_bytes()
        except FileNotFoundError:
            return None

    @property
    def size(self) -> int:
        """Entries in the served checkpoint."""
        return self._checkpoint.size

    @property
    def checkpoint_note(self) -> bytes:
        """The served checkpoint note."""
        return self._note

    def entry_bytes(self, index: int) -> bytes:
        """The exact bytes of entry ``index``."""
        return self._reader.entry_bytes(index)

    def entry_range(self, start: int, end: int) -> list[bytes]:
        """The exact bytes of entries ``[start, end)``."""
        return self._reader.entry_range(start, end)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of ``index`` in the tree of ``size`` entries."""
        return self._reader.inclusion_proof(index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof from ``old_size`` to ``new_size`` entries."""
        return self._reader.consistency_proof(old_size, new_size)

    def subtree_hash(self, level: int, n: int) -> bytes:
        """Hash of the complete subtree ``(level, n)`` (for hash tiles)."""
        return self._reader.subtree_hash(level, n)

    def close(self) -> None:
        """Close the files."""
        self._reader.close()


class ReaderRates:
    """A token bucket of entries per authenticated reader: ``rate`` a second, ``burst``
    at once. Thread-safe; remembers at most ``keep`` readers (the least recent go, and
    come back with a full bucket — each needs a token the authority accepted)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        keep: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate < 0 or burst < 1:
            raise ValueError("want rate >= 0 (0: no bound) and burst >= 1")
        self.rate = rate
        """Entries per second per reader; 0 means no bound."""
        self.burst = burst
        """Most entries a reader may take at once."""
        self._keep = keep
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def spend(self, reader: str, cost: float) -> None:
        """Charge ``cost`` entries already read (a console search reads before it knows
        how many): the bucket may go below empty, and the reader then waits it out."""
        if self.rate == 0:
            return
        now = self._clock()
        with self._lock:
            level, then = self._buckets.pop(reader, (self.burst, now))
            level = min(self.burst, level + (now - then) * self.rate) - cost
            self._buckets[reader] = (max(level, -10 * self.burst), now)

    def take(self, reader: str, cost: float) -> float:
        """Take ``cost`` entries from ``reader``'s bucket: 0 if taken, else the seconds
        to wait before this request would be (nothing is taken then)."""
        if self.rate == 0:
            return 0.0
        cost = min(cost, self.burst)
        now = self._clock()
        with self._lock:
            level, then = self._buckets.pop(reader, (self.burst, now))
            level = min(self.burst, level + (now - then) * self.rate)
            wait = 0.0
            if level >= cost:
                level -= cost
            else:
                wait = (cost - level) / self.rate
            self._buckets[reader] = (level, now)
            while len(self._buckets) > self._keep:
                self._buckets.popitem(last=False)
        return wait


@dataclass
class ReadServerMetrics:
    """The read server's own metrics (``regsandbox_audit_read_*``), in its registry."""

    registry: CollectorRegistry

    def __post_init__(self) -> None:
        self.limited = Counter(
            "regsandbox_audit_read_rate_limited",
            "Read requests answered 429 because the reader was past its rate.",
            registry=self.registry,
        )
        """Requests refused for rate."""
        self.checkpoint_size = Gauge(
            "regsandbox_audit_read_checkpoint_tree_size",
            "Tree size of the checkpoint the read server serves (trails the writer's by "
            "at most its checkpoint interval).",
            registry=self.registry,
        )
        """Size of the served checkpoint."""


def _rate_key(reader: Reader, request: Request) -> str:
    """Whose bucket a read is charged to: the identity; anonymous readers (open reads)
    each by their address (an IPv6 client by its /64), so one of them cannot take every
    public mirror's share."""
    if reader.name != "anonymous" or request.client is None:
        return reader.name
    host = request.client.host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"anonymous@{host}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"anonymous@{address.ipv4_mapped}"
        # a host is routed a whole /64 and may use any address of it
        return f"anonymous@{ipaddress.ip_network(f'{address}/64', strict=False)}"
    return f"anonymous@{address}"


def create_read_app(
    log: PublishedLog,
    policy: AccessPolicy,
    *,
    rates: ReaderRates | None = None,
    console: ConsoleSettings | None = None,
    registry: CollectorRegistry | None = None,
    writer_status: Callable[[], tuple[int, bytes]] | None = None,
) -> FastAPI:
    """The read server's application: every read route and the console over ``log``.

    Reads are authorised exactly as on the writer's listener (``policy``; its
    ``reads_at`` must be unset), then charged to the reader's bucket in ``rates``
    (entries for ranges, pages and bundles; 1 for anything else). ``writer_status``
    gives the writer's ``/v1/status`` (code, body), served here too; ``/healthz`` is
    200 while the published checkpoint can be read; ``/metrics`` has the read server's
    metrics. Nothing here appends or signs.
    """
    if policy.reads_at is not None:
        raise ValueError("the read server's policy serves reads (reads_at must be unset)")
    app = FastAPI(title="regsandbox audit log (reads)", docs_url=None, redoc_url=None)
    registry = registry or CollectorRegistry()
    metrics = ReadServerMetrics(registry)
    HttpMetrics(registry, "regsandbox_audit_read").install(app)
    rates = rates or ReaderRates(DEFAULT_READ_RATE, DEFAULT_READ_BURST)

    async def gate(request: Request, scope: Scope, verb: Verb, cost: int = 1) -> Reader:
        reader = await authorize_read(policy, request, scope, verb)
        wait = rates.take(_rate_key(reader, request), cost)
        if wait > 0:
            metrics.limited.inc()
            raise HTTPException(
                429,
                f"{reader.name} is reading faster than {rates.rate:,.0f} entries/s; "
                f"retry in {wait:.1f} s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return reader

    def current() -> tuple[bytes, Checkpoint]:
        note, checkpoint = log.current()
        metrics.checkpoint_size.set(checkpoint.size)
        return note, checkpoint

    add_read_routes(
        app,
        log,
        gate,
        current,
        cosigned=log.cosigned,
        history=CheckpointHistory(),
        console=console or ConsoleSettings(),
        spent=rates.spend,
    )
    _own_routes(app, current, registry, writer_status)
    return app


def _own_routes(
    app: FastAPI,
    current: Callable[[], tuple[bytes, Checkpoint]],
    registry: CollectorRegistry,
    writer_status: Callable[[], tuple[int, bytes]] | None,
) -> None:
    """The read server's health, status and metrics; and no appends."""

    @app.post("/v1/entries")
    async def no_appends() -> Response:
        """Nothing appends here."""
        return JSONResponse(
            {"detail": "the read server serves reads only; writers append on the append port"},
            status_code=405,
            headers={"Allow": "GET"},
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        """200 while the published checkpoint and the files can be read."""
        try:
            await run_in_threadpool(current)
        except Exception as exc:
            return JSONResponse({"ok": False, "detail": str(exc)}, status_code=503)
        return Response("ok\n", media_type="text/plain")

    cached: list[tuple[float, int, bytes]] = []
    asking = asyncio.Lock()

    @app.get("/v1/status")
    async def status() -> Response:
        """The writer's conditions (no token needed; they hold no log content), as the
        writer gave them at most :data:`STATUS_SECONDS` ago: readers polling here never
        load the writer's listener with more than one request per that time."""
        if writer_status is None:
            return JSONResponse({"ok": True, "conditions": []})
        async with asking:
            if not cached or time.monotonic() - cached[0][0] > STATUS_SECONDS:
                try:
                    code, body = await run_in_threadpool(writer_status)
                except httpx.HTTPError as exc:
                    body = json.dumps(
                        {"ok": False, "detail": f"the writer did not answer: {type(exc).__name__}"}
                    ).encode()
                    code = 503
                cached[:] = [(time.monotonic(), code, body)]
            _, code, body = cached[0]
        return Response(body, status_code=code, media_type="application/json")

    @app.get("/metrics")
    async def metrics_route() -> Response:
        """The read server's Prometheus metrics."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


_KEPT_ENVIRONMENT = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "KUBECONFIG",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    # the Kubernetes client's way to the API server (TokenReview, SubjectAccessReview)
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
)
_KEPT_PREFIXES = ("LC_", "PYTHON", "KUBERNETES_SERVICE_", "REGSANDBOX_LOG")


def read_server_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the read server inherits of ``environ`` (default: this process's): what a
    Python process, its logs and an in-cluster Kubernetes client need, and nothing else
    — not the archive's S3 credentials nor any other secret the writer is given."""
    environ = os.environ if environ is None else environ
    return {
        name: value
        for name, value in environ.items()
        if name in _KEPT_ENVIRONMENT or name.startswith(_KEPT_PREFIXES)
    }


class ReadServerProcess:
    """Runs the read server as a child process and keeps it running.

    A thread starts ``command`` (in :func:`read_server_environment`), then asks
    ``health_url`` every ``probe_interval`` seconds. A child that exits, or does not
    answer ``probe_failures`` probes in a row (hung), is killed and started again after
    a back-off (1 s doubling to 30 s; reset once it has served for a minute); one that
    answers unhealthy (e.g. it refuses a checkpoint file) is left running, since a
    restart would forget what it refused. While it is not serving, :meth:`condition`
    says so (``ReadsServed`` False: reads are down, appends are not), the
    ``regsandbox_audit_read_server_up`` gauge is 0 and every restart is counted.
    """

    def __init__(
        self,
        command: Sequence[str],
        health_url: str,
        registry: CollectorRegistry,
        *,
        probe_interval: float = 2.0,
        probe_failures: int = 3,
        probe_timeout: float = 2.0,
        startup_timeout: float = 60.0,
    ) -> None:
        self.command = list(command)
        """The child's command line."""
        self.health_url = health_url
        """The child's ``/healthz``."""
        self._probe_interval = probe_interval
        self._probe_failures = probe_failures
        self._startup_timeout = startup_timeout
        self._probe_timeout = probe_timeout
        self._stop = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._serving = False
        self._why = "starting"
        self._thread = threading.Thread(target=self._run, name="audit-read-server", daemon=True)
        self.up = Gauge(
            "regsandbox_audit_read_server_up",
            "1 while the read server process answers its health check, 0 otherwise "
            "(reads are then down; appends are not).",
            registry=registry,
        )
        """1 serving, 0 not."""
        self.restarts = Counter(
            "regsandbox_audit_read_server_restarts",
            "Times the read server process was started again after it died or hung.",
            registry=registry,
        )
        """Restarts."""

    @property
    def pid(self) -> int | None:
        """The running child's process id, if any."""
        child = self._child
        return None if child is None or child.poll() is not None else child.pid

    @property
    def serving(self) -> bool:
        """Whether the child answers its health check."""
        return self._serving

    def start(self) -> None:
        """Start the child and the thread that keeps it running."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 10 s) and the thread."""
        self._stop.set()
        self._thread.join(timeout=30)
        self._end_child()

    def condition(self) -> dict[str, str]:
        """The ``ReadsServed`` condition, for ``/v1/status``."""
        if self._serving:
            return {
                "type": "ReadsServed",
                "status": "True",
                "reason": "ReadServerUp",
                "message": "the read server answers",
            }
        if self._why.startswith("its health check answered"):
            reason, message = "ReadServerUnhealthy", f"the read server is up but {self._why}"
        else:
            reason = "ReadServerDown"
            message = f"the read server is not answering ({self._why}); it is restarted"
        return {"type": "ReadsServed", "status": "False", "reason": reason, "message": message}

    def scrape(self) -> bytes:
        """The child's ``/metrics`` text, or nothing if it does not answer."""
        if not self._serving:
            return b""
        url = self.health_url.rsplit("/", 1)[0] + "/metrics"
        try:
            answer = httpx.get(url, timeout=2.0)
        except httpx.HTTPError:
            return b""
        return answer.content if answer.status_code == 200 else b""

    def _set(self, serving: bool, why: str = "") -> None:
        self._serving = serving
        self._why = why
        self.up.set(1 if serving else 0)

    def _probe(self) -> str | None:
        """``None`` if the child answers healthy; else why not ("" if it did not answer)."""
        try:
            answer = httpx.get(self.health_url, timeout=self._probe_timeout)
        except httpx.HTTPError:
            return ""
        if answer.status_code == 200:
            return None
        return f"its health check answered {answer.status_code}: {answer.text[:200]}"

    def _kill(self) -> None:
        if self._child is not None:
            self._child.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(timeout=10)

    def _end_child(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(timeout=10)

    def _run(self) -> None:
        backoff = 1.0
        first = True
        while not self._stop.is_set():
            if not first:
                self.restarts.inc()
            first = False
            started = time.monotonic()
            why = self._serve_once()
            self._set(False, why)
            if self._stop.is_set():
                return
            _log.error("read server stopped; restarting it", reason=why, after=backoff)
            if time.monotonic() - started > 60:
                backoff = 1.0
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _serve_once(self) -> str:
        """Run one child until it exits or hangs; return why it stopped."""
        self._child = subprocess.Popen(self.command, env=read_server_environment())
        began = time.monotonic()
        failures = 0
        while not self._stop.wait(self._probe_interval if self._serving else 0.2):
            code = self._child.poll()
            if code is not None:
                return f"it exited with code {code}"
            if not self._serving and time.monotonic() - began > self._startup_timeout:
                self._kill()
                return f"it did not answer within {self._startup_timeout:.0f} s of starting"
            unwell = self._probe()
            if unwell is None:
                failures = 0
                if not self._serving:
                    _log.info("read server serving", pid=self._child.pid)
                    self._set(True)
            elif unwell:
                # It answers, unhealthy (e.g. a checkpoint file it refuses): a restart
                # would not help, and would forget what it refused. Show it.
                failures = 0
                if self._serving or self._why != unwell:
                    _log.error("read server unhealthy", reason=unwell)
                self._set(False, unwell)
                began = time.monotonic()
            elif self._serving or self._why.startswith("its health check answered"):
                failures += 1
                if failures >= self._probe_failures:
                    self._kill()
                    return f"it failed {failures} health checks in a row"
        self._end_child()
        return "stopped"
