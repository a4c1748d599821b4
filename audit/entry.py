"""Log entries: what happened, and how it is turned into the bytes that get hashed.

An :class:`Event` is what a component reports (who did what to which resource, the
policy decision and the outcome). The log gives it an index and serialises it as RFC 8785
canonical JSON: those bytes are the :class:`Entry`, and ``SHA-256(0x00 || bytes)`` is its
Merkle leaf. Entries are at most :data:`MAX_ENTRY_BYTES` long.
"""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_serializer,
    field_validator,
)

from audit.canonical import canonical_json
from audit.errors import EntryTooLargeError, MalformedError

__all__ = [
    "MAX_ENTRY_BYTES",
    "SCHEMA_VERSION",
    "Actor",
    "DecisionRecord",
    "Entry",
    "Event",
    "Outcome",
    "Resource",
    "encode_entry",
    "entry_index_hint",
]

MAX_ENTRY_BYTES = 64 * 1024
"""Largest canonical entry accepted, in bytes."""

SCHEMA_VERSION: Literal[1] = 1
"""Version of the entry schema written by this code."""

Outcome = Literal["success", "failure", "denied"]
"""What came of an audited action: done, refused by a rule, or failed."""

_MAX_INDEX = 2**53 - 1  # the largest integer JSON represents exactly


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class Actor(_Model):
    """Who acted: an authenticated user and groups, or a workload identity."""

    user: str | None = None
    """Authenticated user name as the API server reported it."""
    groups: tuple[str, ...] = ()
    """The user's groups."""
    service_account: str | None = None
    """``namespace/name`` of the ServiceAccount, for workloads and components."""
    pod: str | None = None
    """``namespace/name`` of the pod the request came from, if any."""


class Resource(_Model):
    """What was acted on."""

    kind: str = Field(min_length=1)
    """Kind of object, such as ``Sandbox``, ``Dataset``, ``ModelExport``, ``Key``."""
    name: str = Field(min_length=1)
    """Object name (for objects in storage, the object key)."""
    namespace: str | None = None
    """Kubernetes namespace, for namespaced objects."""
    tenant: str | None = None
    """Tenant the resource belongs to."""
    sandbox: str | None = None
    """Sandbox the action happened in, if any."""


class DecisionRecord(_Model):
    """The policy decision that allowed or refused the action."""

    allow: bool
    """Whether policy allowed the action."""
    policy_digest: str | None = None
    """``sha256:…`` digest of the policy bundle that decided."""
    codes: tuple[str, ...] = ()
    """Violation codes, when refused (or warned)."""


def _now() -> datetime:
    return datetime.now(UTC)


class Event(_Model):
    """Something that must be logged; becomes an :class:`Entry` once it has an index."""

    schema_version: Literal[1] = SCHEMA_VERSION
    """Entry schema version."""
    time: datetime = Field(default_factory=_now)
    """When it happened, UTC, microsecond precision."""
    event_id: str = Field(default_factory=lambda: str(uuid.uuid4()), pattern=r"^[0-9a-f-]{36}$")
    """Unique id of this event (a UUID, lowercase)."""
    request_id: str | None = None
    """Id of the request that caused it, to correlate with other logs."""
    actor: Actor
    """Who acted."""
    action: str = Field(pattern=r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$")
    """Dotted action name: ``dataset.read``, ``model.export.released``, ``key.destroyed`` …"""
    resource: Resource
    """What was acted on."""
    decision: DecisionRecord | None = None
    """Policy decision, if one was made."""
    outcome: Outcome
    """What came of it."""
    details: dict[str, JsonValue] = Field(default_factory=dict)
    """Action-specific facts (bytes read, sha256 of an artifact, …)."""
    nonce: str = Field(default_factory=lambda: secrets.token_hex(16), pattern=r"^[0-9a-f]{32}$")
    """128 random bits, hex: makes every leaf hash unguessable."""

    @field_validator("time")
    @classmethod
    def _utc_microseconds(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a time zone (use UTC)")
        return value.astimezone(UTC)

    @field_serializer("time")
    def _format_time(self, value: datetime) -> str:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Entry(Event):
    """An event at its position in the log, as stored and hashed."""

    index: int = Field(ge=0, le=_MAX_INDEX)
    """Zero-based position in the log."""

    def to_bytes(self) -> bytes:
        """The canonical bytes of this entry (exactly what is hashed)."""
        return _encode(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> Entry:
        """Parse stored entry bytes, insisting they are canonical.

        Raises :class:`~audit.errors.MalformedError` if ``data`` is not the canonical
        serialisation of a valid entry (so re-serialising gives back the same bytes).
        """
        if len(data) > MAX_ENTRY_BYTES:
            raise EntryTooLargeError(len(data), MAX_ENTRY_BYTES)
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedError(f"entry is not valid JSON: {exc}") from exc
        try:
            entry = cls.model_validate(raw)
        except ValidationError as exc:
            raise MalformedError(f"entry does not match the schema: {exc}") from exc
        if entry.to_bytes() != data:
            raise MalformedError("entry is not in RFC 8785 canonical form")
        return entry


def _encode(document: dict[str, Any]) -> bytes:
    data = canonical_json(document)
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryTooLargeError(len(data), MAX_ENTRY_BYTES)
    return data


def encode_entry(event: Event, index: int) -> bytes:
    """Canonical bytes of ``event`` logged at ``index``.

    Raises :class:`~audit.errors.EntryTooLargeError` over :data:`MAX_ENTRY_BYTES`.
    """
    if not 0 <= index <= _MAX_INDEX:
        raise MalformedError(f"index {index} is out of range")
    document = event.model_dump(mode="json")
    document["index"] = index
    return _encode(document)


def entry_index_hint(data: bytes) -> int | None:
    """The ``index`` field of canonical entry bytes, read without parsing the JSON.

    In canonical form the top-level keys are sorted and every key after ``index``
    (``nonce`` … ``time``) belongs to a closed schema with no ``index`` key inside, while
    a string can never contain ``"index":`` unescaped; so the last ``"index":`` in the
    bytes is the top-level one. Used by the streaming verifier, where a full parse per
    entry would be too slow. Returns ``None`` if it is missing or not a plain number.
    """
    at = data.rfind(b'"index":')
    if at < 0:
        return None
    start = at + 8
    end = start
    while end < len(data) and 0x30 <= data[end] <= 0x39:
        end += 1
    digits = data[start:end]
    if not digits or (len(digits) > 1 and digits[0] == 0x30):
        return None
    return int(digits)
