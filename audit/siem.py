"""Streaming the audit log to a SIEM: OCSF events over OTLP/HTTP, resumable from a cursor.

Each entry becomes one OCSF *API Activity* event (class 6003), carried as the body of an
OpenTelemetry log record and posted to an OTLP/HTTP logs endpoint (``…/v1/logs``, JSON
encoding). The event keeps what a SIEM needs to check it later against the log itself:

- ``metadata.uid`` is the entry's identity, ``<origin>#<index>`` (:func:`entry_uid`):
  the same for every send of that entry, different for every other entry of any log;
  ``metadata.sequence`` is its index;
- ``unmapped.regsandbox`` holds the log's origin, the index, the writer's ``event_id``,
  the SHA-256 leaf hash of the exact entry bytes and the signed checkpoint (size and
  root) that covers the entry. An entry is forwarded only once a checkpoint that the
  trusted keys verify covers it.

Delivery guarantee (what can honestly be promised over HTTP): an acknowledgement can be
lost after the receiver stored a batch, so no sender alone can deliver exactly once.
The :class:`Exporter` therefore gives:

- *no loss, no gap, in order*: entries are sent in index order, one request at a time;
  the :class:`Cursor` (the next index, in a file replaced atomically and fsynced with
  its directory) moves past a batch only after the receiver answered 2xx for it; a
  batch the source returns out of order is refused;
- *at most one batch again per interruption*: after a crash, a restart, a timeout or a
  5xx, sending resumes at the cursor, so only the batch whose acknowledgement was not
  recorded can arrive twice; after each interruption batches start small
  (``resume_batch``) and double, so a crash loop repeats little;
- *exactly once where the receiver is idempotent*: every repeat carries the same
  ``metadata.uid`` (and OTLP attribute ``regsandbox.entry.uid``), so a sink that stores
  records under that key (a document id, a primary key) or deduplicates on it keeps each
  entry exactly once.

A receiver that refuses a batch for good (a 4xx other than 408/429, or an OTLP partial
success rejecting records) stops the exporter with :class:`ReceiverRefusedError`, the cursor
unmoved: dropping audit entries silently is worse than stopping.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
import structlog

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.client import AuditUnavailable
from audit.durable import replace_file
from audit.entry import Entry
from audit.errors import AuditError, MalformedError
from audit.log import LogReader
from audit.merkle import leaf_hash
from audit.note import Verifier, b64encode

__all__ = [
    "OCSF_VERSION",
    "Cursor",
    "EntrySource",
    "Exporter",
    "LocalSource",
    "OtlpSink",
    "ReceiverRefusedError",
    "entry_uid",
    "ocsf_event",
    "otlp_logs",
]

_log = structlog.get_logger("audit.siem")

OCSF_VERSION = "1.3.0"
"""OCSF schema version of the events."""

_API_ACTIVITY = 6003
_APPLICATION_ACTIVITY = 6
_ACTIVITIES = {
    "create": 1,
    "created": 1,
    "provisioned": 1,
    "requested": 1,
    "submitted": 1,
    "read": 2,
    "get": 2,
    "changed": 3,
    "updated": 3,
    "approved": 3,
    "rejected": 3,
    "released": 3,
    "revoked": 3,
    "deleted": 4,
    "destroyed": 4,
    "expired": 4,
}


class ReceiverRefusedError(AuditError):
    """The SIEM receiver refused a batch for good: sending it again would not help."""


def entry_uid(origin: str, index: int) -> str:
    """The identity of entry ``index`` of the log ``origin``: ``<origin>#<index>``.

    Deterministic, so every send of an entry carries the same uid, and unique across
    logs, whose origins differ. A SIEM keys on it (``metadata.uid``) to store each
    entry once.
    """
    return f"{origin}#{index}"


def _activity(action: str) -> tuple[int, str]:
    verb = action.rsplit(".", 1)[-1]
    activity = _ACTIVITIES.get(verb, 99)
    name = {1: "Create", 2: "Read", 3: "Update", 4: "Delete"}.get(activity, "Other")
    return activity, name


def ocsf_event(data: bytes, origin: str, checkpoint: Checkpoint) -> dict[str, Any]:
    """The OCSF API Activity event for the entry with exact bytes ``data``."""
    entry = Entry.from_bytes(data)
    activity, activity_name = _activity(entry.action)
    ok = entry.outcome == "success"
    who = entry.actor
    user: dict[str, Any] = {"name": who.user or who.service_account or who.pod or "unknown"}
    if who.groups:
        user["groups"] = [{"name": g} for g in who.groups]
    resource: dict[str, Any] = {"type": entry.resource.kind, "name": entry.resource.name}
    labels = {
        key: value
        for key, value in (
            ("namespace", entry.resource.namespace),
            ("tenant", entry.resource.tenant),
            ("sandbox", entry.resource.sandbox),
        )
        if value
    }
    if labels:
        resource["labels"] = [f"{k}={v}" for k, v in labels.items()]
    event: dict[str, Any] = {
        "class_uid": _API_ACTIVITY,
        "class_name": "API Activity",
        "category_uid": _APPLICATION_ACTIVITY,
        "category_name": "Application Activity",
        "activity_id": activity,
        "activity_name": activity_name,
        "type_uid": _API_ACTIVITY * 100 + activity,
        "time": int(entry.time.timestamp() * 1000),
        "severity_id": 1 if ok else 3,
        "status_id": 1 if ok else 2,
        "status": "Success" if ok else "Failure",
        "status_detail": entry.outcome,
        "actor": {"user": user},
        "api": {"operation": entry.action},
        "resources": [resource],
        "metadata": {
            "version": OCSF_VERSION,
            "uid": entry_uid(origin, entry.index),
            "sequence": entry.index,
            "log_name": origin,
            "product": {"name": "regsandbox audit log", "vendor_name": "regsandbox"},
        },
        "unmapped": {
            "regsandbox": {
                "origin": origin,
                "index": entry.index,
                "event_id": entry.event_id,
                "leaf_hash": b64encode(leaf_hash(data)),
                "checkpoint": {"size": checkpoint.size, "root": b64encode(checkpoint.root)},
            }
        },
    }
    if entry.request_id:
        event["api"]["request"] = {"uid": entry.request_id}
    if who.pod:
        event["actor"]["process"] = {"name": who.pod}
    if entry.decision is not None:
        event["unmapped"]["regsandbox"]["decision"] = entry.decision.model_dump(mode="json")
    return event


def otlp_logs(events: Sequence[dict[str, Any]], origin: str) -> dict[str, Any]:
    """An OTLP/HTTP JSON ``ExportLogsServiceRequest`` carrying ``events`` as log bodies."""
    records = [
        {
            "timeUnixNano": str(event["time"] * 1_000_000),
            "severityNumber": 9 if event["status_id"] == 1 else 13,
            "severityText": "INFO" if event["status_id"] == 1 else "WARN",
            "body": {"stringValue": json.dumps(event, separators=(",", ":"), sort_keys=True)},
            "attributes": [
                {"key": "ocsf.class_uid", "value": {"intValue": str(event["class_uid"])}},
                {
                    "key": "regsandbox.index",
                    "value": {"intValue": str(event["metadata"]["sequence"])},
                },
                {"key": "regsandbox.entry.uid", "value": {"stringValue": event["metadata"]["uid"]}},
                {
                    "key": "regsandbox.event_id",
                    "value": {"stringValue": event["unmapped"]["regsandbox"]["event_id"]},
                },
            ],
        }
        for event in events
    ]
    return {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "regsandbox-audit"}},
                        {"key": "regsandbox.log.origin", "value": {"stringValue": origin}},
                    ]
                },
                "scopeLogs": [{"scope": {"name": "regsandbox.audit.siem"}, "logRecords": records}],
            }
        ]
    }


class Cursor:
    """The next index to forward, and of which log, in a file replaced atomically and durably.

    The file holds ``{"next": <index>, "origin": "<origin>"}``; a bare index (the format
    before the origin was kept) is read as well, and rewritten at the next save.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        """The cursor file."""

    def read(self) -> tuple[int, str | None]:
        """The next index to forward (0 without a file) and the log's origin, if known."""
        try:
            text = self.path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return 0, None
        except (OSError, UnicodeDecodeError) as exc:
            raise MalformedError(f"cursor file {self.path} cannot be read: {exc}") from exc
        if text.isdigit():
            return int(text), None
        try:
            doc = json.loads(text)
            index, origin = doc["next"], doc["origin"]
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedError(f"cursor file {self.path} is damaged; fix or remove it") from exc
        if not (isinstance(index, int) and index >= 0 and isinstance(origin, str) and origin):
            raise MalformedError(f"cursor file {self.path} is damaged; fix or remove it")
        return index, origin

    def load(self) -> int:
        """The next index to forward (0 without a file)."""
        return self.read()[0]

    def save(self, index: int, origin: str) -> None:
        """Record that every entry of log ``origin`` below ``index`` was acknowledged."""
        doc = json.dumps({"next": index, "origin": origin}, separators=(",", ":"))
        replace_file(self.path, doc.encode() + b"\n")


class EntrySource(Protocol):
    """Where entries come from: :class:`audit.client.AuditClient` (or a local adapter)."""

    def checkpoint(self) -> bytes:
        """The latest signed checkpoint note."""
        ...

    def entries(self, start: int, end: int) -> list[bytes]:
        """The exact bytes of entries ``[start, end)``."""
        ...


class LocalSource:
    """An :class:`EntrySource` over a log directory read in place (:class:`LogReader`)."""

    def __init__(self, reader: LogReader) -> None:
        self.reader = reader
        """The log, read as of its latest checkpoint."""

    def checkpoint(self) -> bytes:
        """The latest checkpoint on disk."""
        self.reader.refresh()
        return self.reader.checkpoint_note

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``[start, end)``."""
        return self.reader.entry_range(start, end)


_RETRYABLE = frozenset({408, 429})
"""4xx answers that mean "later", not "never" (OTLP/HTTP also retries 5xx here)."""


class OtlpSink:
    """Posts OTLP/HTTP JSON log requests and tells an acknowledgement from a refusal.

    :meth:`send` returns once the receiver answered 2xx. A transport error, a timeout, a
    5xx, 408 or 429 raise :class:`~audit.client.AuditUnavailable` (send again later: the
    batch may or may not have been stored); any other answer, or a 2xx whose OTLP partial
    success rejects records, raises :class:`ReceiverRefusedError`.
    """

    def __init__(
        self, url: str, *, headers: dict[str, str] | None = None, timeout: float = 10.0
    ) -> None:
        self.url = url
        """The OTLP/HTTP logs endpoint, e.g. ``http://collector:4318/v1/logs``."""
        self._http = httpx.Client(headers=headers or {}, timeout=timeout)

    def send(self, body: dict[str, Any]) -> None:
        """Post one request and wait for the receiver's acknowledgement."""
        try:
            answer = self._http.post(self.url, json=body)
        except httpx.TimeoutException as exc:
            raise AuditUnavailable(
                f"SIEM receiver did not answer in time ({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise AuditUnavailable(f"SIEM receiver unreachable: {type(exc).__name__}") from exc
        status = answer.status_code
        if status >= 500 or status in _RETRYABLE:
            raise AuditUnavailable(f"SIEM receiver answered {status}")
        if not 200 <= status < 300:
            raise ReceiverRefusedError(
                f"SIEM receiver refused the batch: {status} {_detail(answer)}"
            )
        rejected, message = _partial_rejection(answer)
        if rejected:
            raise ReceiverRefusedError(
                f"SIEM receiver rejected {rejected} record(s) of the batch: {message}"
            )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


def _detail(answer: httpx.Response) -> str:
    return " ".join(answer.text.split())[:200]


def _partial_rejection(answer: httpx.Response) -> tuple[int, str]:
    """``(rejectedLogRecords, errorMessage)`` of an OTLP partial success (0 if none)."""
    try:
        doc = answer.json()
    except ValueError:
        return 0, ""
    partial = doc.get("partialSuccess") if isinstance(doc, dict) else None
    if not isinstance(partial, dict):
        return 0, ""
    rejected = partial.get("rejectedLogRecords", 0)
    try:
        count = int(rejected)  # int64 is a string in OTLP JSON
    except (TypeError, ValueError):
        return 0, ""
    return count, str(partial.get("errorMessage", ""))[:200]


class Exporter:
    """Forwards checkpointed entries from ``source`` to ``sink``, from ``cursor`` on.

    One request at a time, in index order; ``batch`` entries per request at most, starting
    at ``resume_batch`` after a start or an interruption and doubling per acknowledged
    batch (see the module's delivery guarantee).
    """

    def __init__(
        self,
        source: EntrySource,
        sink: OtlpSink,
        cursor: Cursor,
        verifiers: Iterable[Verifier],
        *,
        batch: int = 256,
        resume_batch: int = 16,
    ) -> None:
        self.source, self.sink, self.cursor = source, sink, cursor
        self.verifiers = tuple(verifiers)
        """Keys a checkpoint must verify with before its entries are forwarded."""
        if not self.verifiers:
            raise ValueError("the exporter needs the log's verifier key")
        if not 0 < batch <= 1000:
            raise ValueError("batch is 1 to 1000 entries")
        if resume_batch < 1:
            raise ValueError("resume_batch is at least 1 entry")
        self.batch = batch
        """Most entries per request."""
        self.resume_batch = min(batch, resume_batch)
        """Entries in the first request after a start or an interruption."""
        self._window = self.resume_batch

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Forward every entry the current checkpoint covers past the cursor; return how many.

        Stops early (between batches) once ``stop`` is set. Raises
        :class:`~audit.client.AuditUnavailable` when the source or the receiver cannot be
        reached (the cursor stays where the last acknowledged batch ended).
        """
        checkpoint = open_checkpoint(self.source.checkpoint(), self.verifiers)
        origin = checkpoint.origin
        start, known = self.cursor.read()
        if known is not None and known != origin:
            raise MalformedError(
                f"the cursor {self.cursor.path} belongs to the log {known!r}, "
                f"not to {origin!r}: give each log its own cursor file"
            )
        if start > checkpoint.size:
            raise MalformedError(
                f"the cursor ({start}) is past the log's checkpoint ({checkpoint.size}): "
                "a different log, or one that was rolled back"
            )
        sent = 0
        while start < checkpoint.size and not (stop is not None and stop.is_set()):
            end = min(start + self._window, checkpoint.size)
            datas = self.source.entries(start, end)
            events = [ocsf_event(d, origin, checkpoint) for d in datas]
            indices = [e["metadata"]["sequence"] for e in events]
            if indices != list(range(start, end)):
                raise MalformedError(f"the source returned entries {indices[:3]}… for {start}")
            try:
                self.sink.send(otlp_logs(events, origin))
            except AuditUnavailable:
                self._window = self.resume_batch  # the next try repeats little if it is cut
                raise
            self.cursor.save(end, origin)
            sent += end - start
            start = end
            self._window = min(self.batch, self._window * 2)
        return sent

    def run(self, stop: threading.Event, interval: float = 5.0) -> None:
        """Forward until ``stop`` is set, polling every ``interval`` seconds; retry failures.

        :class:`ReceiverRefusedError` and a damaged cursor or source end the run (raised).
        """
        start = self.cursor.load()
        _log.info("SIEM export started", next_index=start)
        while not stop.is_set():
            try:
                self.run_once(stop)
            except AuditUnavailable as exc:  # the cursor has not moved: retry later
                _log.warning("SIEM export paused", error=str(exc), next_index=self.cursor.load())
            stop.wait(interval)
