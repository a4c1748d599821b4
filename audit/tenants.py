"""Which entries belong to which tenant: an index the service builds as the log grows.

An entry belongs to the tenant named in its ``resource.tenant``; an entry without one
(a platform event such as ``policy.changed``) belongs to no tenant and is visible only to
whole-log readers. The index is built lazily, on the first tenant-scoped read, by reading
each entry once in order; later reads only look at the entries appended since. It reads
entries with positional reads and takes no lock of the log, so it never holds up an
append. Memory: one integer per entry that names a tenant.
"""

from __future__ import annotations

import bisect
import json
import threading
from array import array
from collections.abc import Callable

from audit.errors import MalformedError

__all__ = ["TenantIndex", "entry_tenant"]


_RESOURCE = b'"resource":{'
_DECODER = json.JSONDecoder()


def entry_tenant(data: bytes) -> str | None:
    """The ``resource.tenant`` of canonical entry bytes, or None if it names none.

    Reads only the ``resource`` object. In canonical form (RFC 8785) the top-level keys
    are sorted, and the only keys after ``resource`` are ``schema_version`` (a number)
    and ``time`` (a string); a string never holds an unescaped ``"``. So the last
    ``"resource":{`` in the bytes opens the top-level resource, whatever ``details``
    holds (the same reasoning as :func:`audit.entry.entry_index_hint`).
    """
    at = data.rfind(_RESOURCE)
    if at < 0:
        raise MalformedError("entry has no resource object")
    try:
        resource, _ = _DECODER.raw_decode(data[at + len(_RESOURCE) - 1 :].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedError(f"entry's resource is not JSON: {exc}") from None
    tenant = resource.get("tenant") if isinstance(resource, dict) else None
    return tenant if isinstance(tenant, str) and tenant else None


class TenantIndex:
    """Indices of each tenant's entries, for a log read through ``entry_bytes``.

    Thread-safe; :meth:`catch_up` must be told how far the log is readable (the
    checkpoint's size) and only ever reads below it.
    """

    def __init__(self, entry_bytes: Callable[[int], bytes]) -> None:
        self._read = entry_bytes
        self._indexed = 0
        self._by_tenant: dict[str, array[int]] = {}
        self._lock = threading.Lock()

    @property
    def indexed(self) -> int:
        """How many entries, from index 0, have been indexed."""
        return self._indexed

    def catch_up(self, size: int) -> None:
        """Index every entry below ``size`` not indexed yet."""
        with self._lock:
            for index in range(self._indexed, size):
                tenant = entry_tenant(self._read(index))
                if tenant is not None:
                    self._by_tenant.setdefault(tenant, array("q")).append(index)
                self._indexed = index + 1

    def tenant_of(self, index: int, size: int) -> str | None:
        """The tenant of entry ``index`` (which must be below ``size``)."""
        self.catch_up(size)
        return entry_tenant(self._read(index))

    def page(self, tenant: str, start: int, limit: int, size: int) -> tuple[list[int], int | None]:
        """Up to ``limit`` of ``tenant``'s indices in ``[start, size)``, and the next start.

        The next start is None when no more of the tenant's entries lie below ``size``.
        """
        self.catch_up(size)
        with self._lock:
            found = self._by_tenant.get(tenant)
            if found is None:
                return [], None
            at = bisect.bisect_left(found, start)
            end = bisect.bisect_left(found, size)
            chosen = list(found[at : min(end, at + limit)])
            more = at + limit < end
            return chosen, (found[at + limit] if more else None)
