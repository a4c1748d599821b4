"""Streaming the audit log to a SIEM: OCSF events over OTLP/HTTP, resumable from a cursor.

Each entry becomes one OCSF *API Activity* event (class 6003), carried as the body of an
OpenTelemetry log record and posted to an OTLP/HTTP logs endpoint (``…/v1/logs``, JSON
encoding). The event keeps what a SIEM needs to check it later against the log itself:

- ``metadata.uid`` is the entry's ``event_id`` and ``metadata.sequence`` its index;
- ``unmapped.regsandbox`` holds the log's origin, the index, the SHA-256 leaf hash of the
  exact entry bytes and the checkpoint (size and root) that covers it.

Delivery: the :class:`Exporter` reads entries in order from a :class:`Cursor` (the next
index to send, kept in a small file replaced atomically and fsynced), posts a batch,
and moves the cursor only once the receiver has answered 2xx. So a restart resumes
where the last acknowledged batch ended: nothing is lost, nothing acknowledged is sent
again. A crash between the receiver's answer and the cursor's move repeats that one
batch; each record carries the same ``metadata.uid`` (and the OTLP log record's
attributes the index), so a receiver keying on it stores every entry exactly once.
Only entries covered by a checkpoint that the trusted keys verify are sent.
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
from audit.errors import MalformedError
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
            "uid": entry.event_id,
            "sequence": entry.index,
            "log_name": origin,
            "product": {"name": "regsandbox audit log", "vendor_name": "regsandbox"},
        },
        "unmapped": {
            "regsandbox": {
                "origin": origin,
                "index": entry.index,
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
                {"key": "event.id", "value": {"stringValue": event["metadata"]["uid"]}},
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
    """The next index to forward, kept in a file replaced atomically and durably."""

    def __init__(self, path: Path) -> None:
        self.path = path
        """The cursor file."""

    def load(self) -> int:
        """The next index to forward (0 without a file)."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return 0
        if not text.isdigit():
            raise MalformedError(f"cursor file {self.path} is damaged; fix or remove it")
        return int(text)

    def save(self, index: int) -> None:
        """Record that every entry below ``index`` was acknowledged."""
        replace_file(self.path, f"{index}\n".encode())


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
        return [self.reader.entry_bytes(i) for i in range(start, end)]


class OtlpSink:
    """Posts OTLP/HTTP JSON log requests; any answer but 2xx raises AuditUnavailable."""

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
        except httpx.HTTPError as exc:
            raise AuditUnavailable(f"SIEM receiver unreachable: {type(exc).__name__}") from exc
        if not 200 <= answer.status_code < 300:
            raise AuditUnavailable(f"SIEM receiver answered {answer.status_code}")

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


class Exporter:
    """Forwards checkpointed entries from ``source`` to ``sink``, from ``cursor`` on."""

    def __init__(
        self,
        source: EntrySource,
        sink: OtlpSink,
        cursor: Cursor,
        verifiers: Iterable[Verifier],
        *,
        batch: int = 256,
    ) -> None:
        self.source, self.sink, self.cursor = source, sink, cursor
        self.verifiers = tuple(verifiers)
        """Keys a checkpoint must verify with before its entries are forwarded."""
        if not self.verifiers:
            raise ValueError("the exporter needs the log's verifier key")
        if not 0 < batch <= 1000:
            raise ValueError("batch is 1 to 1000 entries")
        self.batch = batch
        """Entries per request."""

    def run_once(self) -> int:
        """Forward every entry the current checkpoint covers past the cursor; return how many."""
        checkpoint = open_checkpoint(self.source.checkpoint(), self.verifiers)
        start = self.cursor.load()
        if start > checkpoint.size:
            raise MalformedError(
                f"the cursor ({start}) is past the log's checkpoint ({checkpoint.size}): "
                "a different log, or one that was rolled back"
            )
        sent = 0
        while start < checkpoint.size:
            end = min(start + self.batch, checkpoint.size)
            datas = self.source.entries(start, end)
            events = [ocsf_event(d, checkpoint.origin, checkpoint) for d in datas]
            indices = [e["metadata"]["sequence"] for e in events]
            if indices != list(range(start, end)):
                raise MalformedError(f"the source returned entries {indices[:3]}… for {start}")
            self.sink.send(otlp_logs(events, checkpoint.origin))
            self.cursor.save(end)
            sent += end - start
            start = end
        return sent

    def run(self, stop: threading.Event, interval: float = 5.0) -> None:
        """Forward until ``stop`` is set, polling every ``interval`` seconds; retry failures."""
        while not stop.is_set():
            try:
                self.run_once()
            except AuditUnavailable as exc:  # the cursor has not moved: retry later
                _log.warning("SIEM export paused", error=str(exc))
            stop.wait(interval)
