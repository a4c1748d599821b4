"""Archive a running log to S3 continuously, in the background of the audit service.

An :class:`Archiver` thread copies entry bundles and checkpoints into an
:class:`~audit.archive.S3Archive` as the log grows. It never blocks an append: it reads
the log through the same reader API a compliance officer uses, on its own thread, and a
failure only shows — in :meth:`Archiver.status` (served at ``/healthz/archive``), in
Prometheus metrics and in the service's logs.

- **Resumable.** Where to start is re-derived from the bucket on every start: the
  largest archived checkpoint (checkpoints are written after the entries they cover).
  Nothing is kept on the log's volume.
- **Idempotent.** Every object is written once (``If-None-Match: *``); a retry that
  finds identical bytes is success. Different bytes under an archived name are never
  written over: that is a conflict, reported loudly and retried at each interval, so it
  stays visible until someone looks.
- **Refuses a log that is not the archived one.** Before its first write the archiver
  checks that the log extends the largest archived checkpoint (same root at that size,
  by a consistency proof); a log that is shorter, or forked, is a conflict.
- **Lag** is the number of entries and the seconds by which the archive trails the
  log's latest checkpoint; the condition turns False when the lag lasts longer than
  ``max_lag`` seconds, or when a pass fails.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from botocore.exceptions import BotoCoreError
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from audit.archive import ArchiveConflictError, ArchiveError, S3Archive
from audit.checkpoint import Checkpoint
from audit.errors import AuditError, VerificationError
from audit.merkle import verify_consistency
from audit.note import Note

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

__all__ = [
    "ArchiveStatus",
    "Archiver",
    "ArchiverSource",
    "s3_client",
]

_log = structlog.get_logger("audit.archiver")


class ArchiverSource(Protocol):
    """What the archiver reads: :class:`audit.log.AuditLog` or a :class:`~audit.log.LogReader`."""

    @property
    def checkpoint_note(self) -> bytes:
        """The latest signed checkpoint note."""
        ...

    def iter_entries(self, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """``(index, bytes)`` of the entries from ``start``."""
        ...

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """Consistency proof from ``old_size`` to ``new_size`` entries."""
        ...

    def refresh(self) -> None:
        """Load the latest checkpoint (a writer's view is always current)."""
        ...


def s3_client(endpoint: str | None = None, region: str | None = None) -> S3Client:
    """A boto3 S3 client; credentials come from the environment as boto3 reads them.

    With an ``endpoint`` (MinIO, Ceph RGW, a sovereign cloud's S3) path-style addressing
    is used; without one, AWS.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"} if endpoint else {},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        read_timeout=30,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint or None, region_name=region or None, config=config
    )


@dataclass(frozen=True)
class ArchiveStatus:
    """The archiver's state as of one moment."""

    bucket: str
    """Bucket archived to."""
    prefix: str
    """Key prefix in it."""
    archived_size: int | None
    """Size of the largest checkpoint known to be archived (``None`` before the first pass)."""
    checkpoint_size: int
    """Size of the log's latest checkpoint."""
    seconds_behind: float
    """How long the archive has trailed the latest checkpoint (0 when it does not)."""
    status: str
    """Condition status: ``True``, ``False`` or ``Unknown``."""
    reason: str
    """CamelCase reason: ``UpToDate``, ``Archiving``, ``Starting``, ``ArchiveBehind``,
    ``ArchiveFailing`` or ``ArchiveConflict``."""
    message: str
    """What a person should know, or do."""
    last_success: datetime | None
    """When a pass last succeeded."""
    last_transition: datetime
    """When the condition's status last changed."""

    @property
    def entries_behind(self) -> int:
        """Entries in the latest checkpoint that are not archived yet."""
        return max(0, self.checkpoint_size - (self.archived_size or 0))

    def condition(self) -> dict[str, str]:
        """The ``Archived`` condition, as the service lists its conditions."""
        return {
            "type": "Archived",
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
        }

    def to_json(self) -> dict[str, Any]:
        """The status as served at ``/healthz/archive``."""
        return {
            "bucket": self.bucket,
            "prefix": self.prefix,
            "archivedSize": self.archived_size,
            "checkpointSize": self.checkpoint_size,
            "entriesBehind": self.entries_behind,
            "secondsBehind": round(self.seconds_behind, 3),
            "lastSuccess": self.last_success.isoformat() if self.last_success else None,
            "condition": {
                "type": "Archived",
                "status": self.status,
                "reason": self.reason,
                "message": self.message,
                "lastTransitionTime": self.last_transition.isoformat(),
            },
        }


def _size(note: bytes) -> Checkpoint:
    return Checkpoint.from_text(Note.parse(note).text)


class Archiver:
    """Archives ``source`` into ``archive`` every ``interval`` seconds, on its own thread.

    ``retention_days``, if set, makes the first pass create the bucket with Object Lock if
    it is missing (each object is then written with its own COMPLIANCE retention of that
    many days, set by ``archive``); without it the bucket must already have a COMPLIANCE
    default retention. ``max_lag`` (default: three intervals, at least a minute) is how
    long the archive may trail the log before the condition turns False.
    Metrics are registered in ``registry`` (a private one by default) and removed by
    :meth:`stop`.
    """

    def __init__(
        self,
        archive: S3Archive,
        source: ArchiverSource,
        *,
        interval: float = 30.0,
        retention_days: int | None = None,
        max_lag: float | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("the archive interval must be positive")
        self.archive = archive
        """Where entries and checkpoints go."""
        self.source = source
        """The log read."""
        self.interval = interval
        """Seconds between passes."""
        self.retention_days = retention_days
        """Retention of a bucket the archiver creates, if any."""
        self.max_lag = max(3 * interval, 60.0) if max_lag is None else max_lag
        """Seconds the archive may trail the latest checkpoint before that is a failure."""
        self.registry = registry or CollectorRegistry()
        """Where the metrics are registered."""
        self._clock = clock
        self._mu = threading.Lock()
        self._prepared = False
        self._archived: int | None = None
        self._behind_since: float | None = None
        self._last_success: datetime | None = None
        self._error: tuple[str, str] | None = None  # (reason, message)
        self._transition = datetime.now(UTC)
        self._last_status = "Unknown"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._metrics = self._make_metrics()

    # -- metrics ----------------------------------------------------------------------

    def _make_metrics(self) -> list[Any]:
        r = self.registry
        entries = Gauge(
            "regsandbox_audit_archive_entries_behind",
            "Entries in the log's latest checkpoint not archived yet.",
            registry=r,
        )
        entries.set_function(lambda: float(self.status().entries_behind))
        seconds = Gauge(
            "regsandbox_audit_archive_seconds_behind",
            "Seconds the archive has trailed the log's latest checkpoint (0 when current).",
            registry=r,
        )
        seconds.set_function(lambda: self.status().seconds_behind)
        archived = Gauge(
            "regsandbox_audit_archive_size",
            "Size of the largest checkpoint archived.",
            registry=r,
        )
        archived.set_function(lambda: float(self._archived or 0))
        healthy = Gauge(
            "regsandbox_audit_archive_ok",
            "1 when the Archived condition is True, else 0.",
            registry=r,
        )
        healthy.set_function(lambda: 1.0 if self.status().status == "True" else 0.0)
        self._passes = Counter(
            "regsandbox_audit_archive_passes_total", "Archive passes that succeeded.", registry=r
        )
        self._failures = Counter(
            "regsandbox_audit_archive_failures_total",
            "Archive passes that failed, by reason (ArchiveFailing, ArchiveConflict).",
            ["reason"],
            registry=r,
        )
        for reason in ("ArchiveFailing", "ArchiveConflict"):
            self._failures.labels(reason)
        return [entries, seconds, archived, healthy, self._passes, self._failures]

    # -- one pass ---------------------------------------------------------------------

    def _prepare(self) -> None:
        """Check the bucket, find where the archive stopped, check the log extends it."""
        if self.retention_days is not None:
            self.archive.ensure_bucket(self.retention_days)
        else:
            mode, _ = self.archive.retention()
            if mode != "COMPLIANCE":
                raise ArchiveError(
                    f"bucket {self.archive.bucket} has default retention mode {mode}, not "
                    "COMPLIANCE; give a retention in days so each object gets its own"
                )
        found = self.archive.latest_checkpoint()
        archived, note = found if found else (0, None)
        self.source.refresh()
        current = _size(self.source.checkpoint_note)
        if note is not None:
            archived_cp = _size(note)
            if archived_cp.size != archived:
                raise ArchiveConflictError(
                    f"archived checkpoint {archived} says size {archived_cp.size}: "
                    "the archive was tampered with"
                )
            self._check_extends(archived, archived_cp, current)
        with self._mu:
            self._archived = archived if found else None
        self._prepared = True

    def _check_extends(self, size: int, archived: Checkpoint, current: Checkpoint) -> None:
        """Raise :class:`ArchiveConflictError` unless the log extends the archived checkpoint."""
        if archived.origin != current.origin:
            raise ArchiveConflictError(
                f"the archive at s3://{self.archive.bucket}/{self.archive.prefix} holds log "
                f"{archived.origin!r}, not {current.origin!r}; use another bucket or prefix"
            )
        if current.size < size:
            raise ArchiveConflictError(
                f"the log's checkpoint ({current.size} entries) is behind the archive's "
                f"({size}): the log was rolled back or replaced; it must not be archived "
                "over the archive (restore it from the archive, or investigate)"
            )
        try:
            if current.size == size:
                if current.root != archived.root:
                    raise VerificationError(f"two roots for size {size}")
            elif size > 0:
                proof = self.source.consistency_proof(size, current.size)
                verify_consistency(size, current.size, proof, archived.root, current.root)
        except VerificationError as exc:
            raise ArchiveConflictError(
                f"the log does not extend the archived checkpoint of {size} entries ({exc}): "
                "the log forked or was rewritten"
            ) from exc

    def run_once(self) -> ArchiveStatus:
        """Run one pass now (the background thread calls this); return the status after it.

        Never raises for archive or S3 failures: they are recorded in the status, the
        metrics and the log.
        """
        started = self._clock()
        try:
            if not self._prepared:
                self._prepare()
            self.source.refresh()
            with self._mu:
                archived = self._archived
            if archived is not None and self._current_size() == archived:
                size = archived  # nothing new: no request at all
            else:
                size = self.archive.archive(self.source, from_size=archived or 0)
        except ArchiveConflictError as exc:
            self._failed("ArchiveConflict", str(exc))
            _log.error("archive conflict: archiving stopped", error=str(exc))
        except (AuditError, BotoCoreError, OSError) as exc:
            self._failed("ArchiveFailing", str(exc))
            _log.error("archive pass failed; retrying", error=str(exc))
        else:
            with self._mu:
                self._archived = size
                self._error = None
                self._last_success = datetime.now(UTC)
                # a checkpoint newer than ``size`` was signed after this pass read the
                # note, so the archive has trailed since then at most
                self._behind_since = started if self._current_size() > size else None
            self._passes.inc()
        return self.status()

    def _failed(self, reason: str, message: str) -> None:
        with self._mu:
            self._error = (reason, message)
        self._failures.labels(reason).inc()

    def _current_size(self) -> int:
        with contextlib.suppress(AuditError, ValueError):
            return _size(self.source.checkpoint_note).size
        return 0

    # -- status -----------------------------------------------------------------------

    def status(self) -> ArchiveStatus:
        """The archiver's state now, with the condition a person or an alert reads."""
        current = self._current_size()
        now = self._clock()
        with self._mu:
            archived = self._archived
            behind = current > (archived or 0) or archived is None
            if behind and self._behind_since is None:
                self._behind_since = now
            elif not behind:
                self._behind_since = None
            seconds = now - self._behind_since if self._behind_since is not None else 0.0
            if self._error is not None:
                status, (reason, message) = "False", self._error
            elif not self._prepared:
                status, reason, message = "Unknown", "Starting", "no archive pass has run yet"
            elif seconds > self.max_lag:
                status, reason = "False", "ArchiveBehind"
                message = (
                    f"the archive has trailed the log for {seconds:.0f}s "
                    f"({current - (archived or 0)} entries); more than {self.max_lag:.0f}s"
                )
            elif behind:
                status, reason = "True", "Archiving"
                message = f"archived {archived or 0} of {current} entries"
            else:
                status, reason = "True", "UpToDate"
                message = f"all {current} checkpointed entries are archived"
            if status != self._last_status:
                self._last_status, self._transition = status, datetime.now(UTC)
            return ArchiveStatus(
                bucket=self.archive.bucket,
                prefix=self.archive.prefix,
                archived_size=archived,
                checkpoint_size=current,
                seconds_behind=seconds,
                status=status,
                reason=reason,
                message=message,
                last_success=self._last_success,
                last_transition=self._transition,
            )

    # -- the thread -------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            deadline = self._clock() + self.interval
            while not self._wake.is_set() and (left := deadline - self._clock()) > 0:
                self.status()  # notice a new checkpoint within a second, for the lag
                self._wake.wait(min(left, 1.0))
            self._wake.clear()

    def start(self) -> None:
        """Start the background thread (a pass runs at once, then every ``interval``)."""
        if self._thread is not None:
            raise RuntimeError("the archiver is already running")
        self._thread = threading.Thread(target=self._loop, name="audit-archiver", daemon=True)
        self._thread.start()
        _log.info(
            "archiving",
            bucket=self.archive.bucket,
            prefix=self.archive.prefix,
            interval=self.interval,
        )

    def wake(self) -> None:
        """Run the next pass now rather than at the end of the interval."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (after the pass under way) and unregister the metrics."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for metric in self._metrics:
            with contextlib.suppress(KeyError):
                self.registry.unregister(metric)
        self._metrics = []

    def install(self, app: FastAPI) -> None:
        """Serve the status at ``GET /healthz/archive`` and, if the app has none, ``/metrics``.

        ``/healthz/archive`` always answers 200 (a probe must not take the service down
        because the archive trails: appends go on); read the condition in the body. The
        ``Archived`` condition is also added to the service's ``/v1/status`` (as one that
        informs, not one that makes the service unready).
        """

        async def archive_status() -> JSONResponse:
            return JSONResponse(self.status().to_json(), headers={"Cache-Control": "no-store"})

        app.add_api_route("/healthz/archive", archive_status, methods=["GET"])
        listed = getattr(app.state, "conditions", None)
        if isinstance(listed, list):  # the service's /v1/status lists informing conditions
            listed.append(lambda: self.status().condition())
        paths = {getattr(route, "path", None) for route in app.router.routes}
        if "/metrics" not in paths:

            async def metrics() -> Response:
                return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

            app.add_api_route("/metrics", metrics, methods=["GET"])
