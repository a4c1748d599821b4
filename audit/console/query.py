"""What the console searches for, and how it pages through the log to find it.

A :class:`Filters` comes from a page's query string; :func:`search` walks the entries of
one scope in index order (newest first, or oldest first) and keeps those that match.
For a tenant's scope the walk goes only through that tenant's entries
(:class:`audit.tenants.TenantIndex`), the same read path as ``/v1/tenants/{t}/entries``;
no other tenant's entry is read for it.

Every walk is bounded: a page stops after ``limit`` matches or after looking at
``budget`` entries, and says where the next page starts, so a narrow filter over a long
log costs several cheap pages rather than one long request.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from audit.access import check_tenant_name
from audit.errors import MalformedError
from audit.tenants import TenantIndex

__all__ = ["EXPORT_ACTIONS", "Filters", "Found", "Paging", "Row", "search"]

EXPORT_ACTIONS = "model.export"
"""Action prefix of every step of a model export: submitted, policy-checked, reviewed…"""

_OUTCOMES = ("success", "failure", "denied")
_ORDERS = ("", "oldest")
_MAX_TEXT = 256
_CHUNK = 500
_MAX_WINDOW = 1 << 16


def _time(name: str, value: str) -> datetime:
    """An ISO 8601 date or date-time; one without a zone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise MalformedError(f"{name}: {value!r} is not a date or date-time (ISO 8601)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _entry_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Filters:
    """What an officer is looking for; every field empty means everything."""

    tenant: str = ""
    """``resource.tenant``, exactly (on a tenant's pages, always that tenant)."""
    sandbox: str = ""
    """``resource.sandbox``, exactly."""
    dataset: str = ""
    """A ``Dataset`` resource of this name."""
    actor: str = ""
    """Part of the actor's user, ServiceAccount or pod."""
    action: str = ""
    """An action, or a dotted prefix of actions (``model.export`` covers its steps)."""
    outcome: str = ""
    """``success``, ``failure`` or ``denied``."""
    since: str = ""
    """Entries at or after this time (ISO 8601; UTC unless a zone is given)."""
    until: str = ""
    """Entries before this time."""
    order: str = ""
    """``oldest`` for oldest first; newest first otherwise."""

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Filters:
        """The filters of a query string; raises MalformedError naming a bad value."""
        values = {f.name: query.get(f.name, "").strip() for f in fields(cls)}
        for name, value in values.items():
            if len(value) > _MAX_TEXT:
                raise MalformedError(f"{name}: longer than {_MAX_TEXT} characters")
        found = cls(**values)
        if found.tenant:
            check_tenant_name(found.tenant)
        if found.outcome and found.outcome not in _OUTCOMES:
            raise MalformedError(f"outcome: want one of {', '.join(_OUTCOMES)}")
        if found.order not in _ORDERS:
            raise MalformedError("order: want 'oldest', or nothing for newest first")
        found.window()
        return found

    def window(self) -> tuple[datetime | None, datetime | None]:
        """The time range as UTC datetimes (either end open)."""
        since = _time("since", self.since) if self.since else None
        until = _time("until", self.until) if self.until else None
        return since, until

    @property
    def newest_first(self) -> bool:
        """Whether pages list the newest entries first (the default)."""
        return self.order != "oldest"

    def with_(self, **changes: str) -> Filters:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def query(self, **extra: object) -> str:
        """The query string of these filters and ``extra`` parameters (empty ones left out)."""
        pairs = [(f.name, getattr(self, f.name)) for f in fields(self)]
        pairs += [(k, str(v)) for k, v in extra.items() if v is not None]
        return urlencode([(k, v) for k, v in pairs if v != ""])

    def matches(self, doc: Mapping[str, Any]) -> bool:
        """Whether a parsed entry passes every filter."""
        resource = doc.get("resource") or {}
        actor = doc.get("actor") or {}
        action = str(doc.get("action") or "")
        checks = (
            not self.tenant or resource.get("tenant") == self.tenant,
            not self.sandbox or resource.get("sandbox") == self.sandbox,
            not self.dataset
            or (resource.get("kind") == "Dataset" and resource.get("name") == self.dataset),
            not self.action or action == self.action or action.startswith(self.action + "."),
            not self.outcome or doc.get("outcome") == self.outcome,
            not self.actor or self._actor_matches(actor),
        )
        return all(checks) and self._in_window(doc.get("time"))

    def _actor_matches(self, actor: Mapping[str, Any]) -> bool:
        names = (actor.get("user"), actor.get("service_account"), actor.get("pod"))
        return any(isinstance(n, str) and self.actor in n for n in names)

    def _in_window(self, value: object) -> bool:
        since, until = self.window()
        if since is None and until is None:
            return True
        when = _entry_time(value)
        if when is None:
            return False
        return (since is None or when >= since) and (until is None or when < until)


@dataclass(frozen=True)
class Row:
    """One matching entry: its index, its parsed fields and its time."""

    index: int
    doc: Mapping[str, Any]
    when: datetime | None


@dataclass(frozen=True)
class Found:
    """A page of matches and where the walk stopped."""

    rows: list[Row]
    next_start: int | None
    """Index to continue from, or None when the scope holds no more entries."""
    scanned: int
    """Entries looked at for this page."""
    size: int
    """Tree size of the checkpoint the page was read under."""


@dataclass(frozen=True)
class Paging:
    """Where a page starts and how much it may hold and read."""

    start: int | None = None
    """First entry index to look at; None: the newest (or, oldest first, entry 0)."""
    limit: int = 50
    """Most matches on the page."""
    budget: int = 5_000
    """Most entries read for the page."""
    newest_first: bool = True
    """Walk from ``start`` down to entry 0, rather than up to the end."""


def _ascending(tenants: TenantIndex, tenant: str | None, start: int, size: int) -> Iterator[int]:
    if tenant is None:
        yield from range(start, size)
        return
    at: int | None = start
    while at is not None:
        chosen, at = tenants.page(tenant, at, _CHUNK, size)
        yield from chosen


def _descending(tenants: TenantIndex, tenant: str | None, start: int, size: int) -> Iterator[int]:
    """Indices from ``start`` down to 0: a tenant's, window by growing window, each window
    one bisection of the index, so a sparse tenant costs few steps."""
    high = min(start + 1, size)
    if tenant is None:
        yield from range(high - 1, -1, -1)
        return
    window = _CHUNK
    while high > 0:
        low = max(0, high - window)
        chosen, _ = tenants.page(tenant, low, high - low, high)
        yield from reversed(chosen)
        high = low
        window = min(window * 2, _MAX_WINDOW)


def search(
    entry_bytes: Callable[[int], bytes],
    tenants: TenantIndex,
    scope_tenant: str | None,
    filters: Filters,
    paging: Paging,
    size: int,
) -> Found:
    """Up to ``paging.limit`` entries of the scope matching ``filters``, from
    ``paging.start`` on (down, newest first, or up), in the first ``size`` entries (a
    checkpoint's).

    ``scope_tenant`` None walks the whole log (a tenant filter then walks only that
    tenant's entries); a tenant walks only that tenant's entries. At most
    ``paging.budget`` entries are read.
    """
    walk = scope_tenant if scope_tenant is not None else (filters.tenant or None)
    rows: list[Row] = []
    scanned = 0
    if paging.newest_first:
        start = size - 1 if paging.start is None else min(paging.start, size - 1)
        indices = _descending(tenants, walk, start, size)
    else:
        indices = _ascending(tenants, walk, max(paging.start or 0, 0), size)
    for index in indices:
        if scanned >= paging.budget or len(rows) >= paging.limit:
            return Found(rows, index, scanned, size)
        scanned += 1
        try:
            doc = json.loads(entry_bytes(index))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MalformedError(f"entry {index} is not JSON: {exc}") from None
        if isinstance(doc, dict) and filters.matches(doc):
            rows.append(Row(index, doc, _entry_time(doc.get("time"))))
    return Found(rows, None, scanned, size)
