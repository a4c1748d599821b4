"""Collecting the evidence for a scope: audit entries with receipts, cluster objects.

Everything is read as of ONE signed checkpoint of the log: every receipt in a pack leads
to the same checkpoint, so a supervisor checks one signature (and the witnesses'
cosignatures, when the log keeps a cosigned copy of that very checkpoint) and then only
hashes.

A scope is a tenant, optionally narrowed to one of its sandboxes and to a time window.
The window narrows only the high-volume data-plane entries (reads, listings, artifact
writes); the entries that define a sandbox's lifecycle — provisioning, grants and
revocations, reviews and releases, key destruction — are always included, because no
finding about a read can be made without the grant it was made under.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.checkpoint import Checkpoint
from audit.errors import MalformedError, VerificationError
from audit.log import LogReader
from audit.merkle import MemoryHashStore, leaf_hash
from audit.note import Note
from audit.witnessing import COSIGNED_FILE
from sandbox.evidence import receipts
from sandbox.evidence._gc import cycle_collection_paused

__all__ = ["DATA_PLANE_ACTIONS", "Collected", "Scope", "collect", "read_cluster", "time_text"]

DATA_PLANE_ACTIONS = frozenset({"dataset.read", "dataset.list", "model.artifact.written"})
"""Actions a time window narrows; every other action of the scope is always collected."""


def time_text(value: dt.datetime) -> str:
    """A time in the audit entries' own format (so strings compare in time order)."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Scope:
    """Which entries a pack covers."""

    tenant: str
    """The tenant; entries of any other tenant are never collected."""
    sandbox: str | None = None
    """One sandbox of the tenant (its name), or all of them."""
    since: str | None = None
    """Data-plane entries from this time on (entry time format, see :func:`time_text`)."""
    until: str | None = None
    """Data-plane entries before this time."""

    def __post_init__(self) -> None:
        if not self.tenant:
            raise ValueError("a scope needs a tenant")

    def covers(self, doc: Mapping[str, Any]) -> bool:
        """Whether the parsed entry ``doc`` belongs in the pack."""
        resource = doc.get("resource")
        if not isinstance(resource, Mapping) or resource.get("tenant") != self.tenant:
            return False
        if self.sandbox is not None and resource.get("sandbox") != self.sandbox:
            return False
        if doc.get("action") in DATA_PLANE_ACTIONS:
            when = str(doc.get("time") or "")
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return True

    def to_json(self) -> dict[str, str | None]:
        """The scope as recorded in the pack."""
        return {
            "tenant": self.tenant,
            "sandbox": self.sandbox,
            "since": self.since,
            "until": self.until,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Scope:
        """Read a scope recorded by :meth:`to_json`."""

        def text(key: str) -> str | None:
            value = doc.get(key)
            if value is not None and not isinstance(value, str):
                raise MalformedError(f"scope {key} must be a string")
            return value

        tenant = text("tenant")
        if not tenant:
            raise MalformedError("scope has no tenant")
        return cls(tenant, text("sandbox"), text("since"), text("until"))


@dataclass
class Collected:
    """Everything read for one scope, as of one checkpoint."""

    scope: Scope
    """The scope."""
    origin: str
    """The log's origin."""
    checkpoint: bytes
    """The signed checkpoint note every receipt leads to (with cosignatures, if any)."""
    size: int
    """Its tree size."""
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    """``(index, exact bytes)`` of every entry in scope, in index order."""
    docs: list[dict[str, Any]] = field(default_factory=list)
    """The entries parsed, same order (kept so the pack does not parse them again)."""
    receipt: bytes = b""
    """The batch receipt proving every entry against :attr:`checkpoint`
    (see :mod:`sandbox.evidence.receipts`)."""
    cluster: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Sandbox namespace → its isolation objects as read from the cluster."""


def _checkpoint_note(reader: LogReader) -> bytes:
    """The latest checkpoint, or its cosigned copy when the witnesses cosigned that one."""
    note = reader.checkpoint_note
    try:
        cosigned = (reader.path / COSIGNED_FILE).read_bytes()
        if Note.parse(cosigned).text == Note.parse(note).text:
            return cosigned
    except (OSError, MalformedError):
        pass
    return note


@cycle_collection_paused()
def collect(
    log_dir: Path,
    scope: Scope,
    *,
    cluster: Callable[[list[str]], dict[str, dict[str, Any]]] | None = None,
) -> Collected:
    """Read the scope's entries and receipts from the log at ``log_dir``.

    Every entry up to the checkpoint is hashed into a tree held in memory, whose root
    must be the signed checkpoint's: a damaged or rewritten log fails here, not in the
    supervisor's hands, and the batch receipt is the proof from that verified tree.
    ``cluster``, given the sandbox namespaces of the scope, returns their isolation
    objects (see :func:`read_cluster`). Raises :class:`~audit.errors.AuditError`
    subclasses for an unreadable or inconsistent log.
    """
    tenant = json.dumps(scope.tenant, ensure_ascii=False).encode()
    tree = MemoryHashStore()
    with LogReader(log_dir) as reader:
        note = _checkpoint_note(reader)
        checkpoint: Checkpoint = reader.checkpoint
        found = Collected(scope, reader.origin, note, checkpoint.size)
        namespaces: list[str] = []
        for index, data in reader.iter_entries():
            tree.append(leaf_hash(data))
            if tenant not in data:  # cheap pre-filter; the parse below decides
                continue
            doc = json.loads(data)
            if not scope.covers(doc):
                continue
            if b"\n" in data:
                raise MalformedError(f"entry {index} is not canonical JSON (holds a newline)")
            found.entries.append((index, data))
            found.docs.append(doc)
            if doc.get("action") == "sandbox.provisioned":
                namespace = str((doc.get("details") or {}).get("namespace") or "")
                if namespace and namespace not in namespaces:
                    namespaces.append(namespace)
    if tree.size != checkpoint.size or tree.root() != checkpoint.root:
        raise VerificationError(
            f"the log's entries do not hash to its checkpoint (size {checkpoint.size}); "
            "run `sandboxctl audit verify` on it"
        )
    indices = [index for index, _ in found.entries]
    found.receipt = receipts.build(tree, checkpoint.size, indices, note)
    if cluster is not None and namespaces:
        found.cluster = cluster(namespaces)
    return found


def read_cluster(api: Any, namespaces: list[str], now: dt.datetime) -> dict[str, dict[str, Any]]:
    """The isolation objects of each namespace: the Namespace (Pod Security labels),
    its NetworkPolicies and ResourceQuotas, as the API server returns them.

    ``managedFields`` are dropped (bookkeeping, and they name other clients). A
    namespace that is gone is recorded as such.
    """
    from sandbox.kube.apply import get, list_objects

    def clean(obj: dict[str, Any]) -> dict[str, Any]:
        meta = dict(obj.get("metadata") or {})
        meta.pop("managedFields", None)
        return {**obj, "metadata": meta}

    read_at = time_text(now)
    snapshots: dict[str, dict[str, Any]] = {}
    for namespace in namespaces:
        ns = get(api, "Namespace", namespace)
        if ns is None:
            snapshots[namespace] = {"namespace": None, "exists": False, "readAt": read_at}
            continue
        snapshots[namespace] = {
            "exists": True,
            "readAt": read_at,
            "namespace": clean(ns),
            "networkPolicies": [clean(o) for o in list_objects(api, "NetworkPolicy", namespace)],
            "resourceQuotas": [clean(o) for o in list_objects(api, "ResourceQuota", namespace)],
        }
    return snapshots
