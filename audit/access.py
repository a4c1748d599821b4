"""Who may read the audit log, and how much of it: readers, scopes, a bounded decision cache.

A read is asked for in a :class:`Scope`: the whole log, or one tenant's slice. A
:class:`ReaderAuthority` answers two questions for the service: who is behind a bearer
token (:meth:`ReaderAuthority.authenticate`), and may that reader ``get`` or ``list`` in
that scope (:meth:`ReaderAuthority.may_read`). This module holds no Kubernetes code (the
audit package never imports a Kubernetes client); :mod:`sandbox.kube.audit_access`
answers both questions with a TokenReview and a SubjectAccessReview.

:class:`CachedAuthority` keeps each answer for a short, bounded time so that a reader
paging through the log does not cost two API requests per page:

- keys are the SHA-256 of the token (never the token itself), plus scope and verb;
- a token is remembered only once accepted; an unknown token is asked again each time;
- an authorisation is remembered allowed *or* refused, for at most ``ttl`` seconds;
- at most ``size`` answers are kept, the least recently used dropped first;
- an authority that cannot answer (:class:`AccessUnavailable`) is never cached.

So a removed RoleBinding, a deleted ServiceAccount or an expired token stops working
within ``ttl`` seconds (10 by default), and a new binding starts working within the same.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from audit.errors import AuditError, MalformedError

__all__ = [
    "DEFAULT_CACHE_SECONDS",
    "AccessUnavailable",
    "CachedAuthority",
    "Reader",
    "ReaderAuthority",
    "Scope",
    "Verb",
    "check_tenant_name",
]

DEFAULT_CACHE_SECONDS = 10.0
"""How long an authentication or authorisation answer is reused, by default."""

Verb = Literal["get", "list"]
"""``get``: one entry, a proof, a checkpoint; ``list``: a listing, tiles, bundles."""

_K = TypeVar("_K")
_V = TypeVar("_V")
_TENANT = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_tenant_name(name: str) -> str:
    """``name`` if it can name a tenant (a DNS label), else raise MalformedError."""
    if not _TENANT.match(name):
        raise MalformedError(f"{name!r} is not a tenant name (a lowercase DNS label)")
    return name


class AccessUnavailable(AuditError):  # noqa: N818 - the HTTP meaning, 503
    """The authority could not decide (API server unreachable, …); fail closed, retry later."""


@dataclass(frozen=True)
class Reader:
    """Someone the authority vouched for."""

    name: str
    """User name, e.g. ``alice`` or ``system:serviceaccount:audit:bank-auditor``."""
    groups: tuple[str, ...] = ()
    """Their groups."""
    uid: str | None = None
    """Their UID, if the authenticator gives one."""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Extra attributes of the authenticator (passed on to authorisation unchanged)."""
    whole_log: bool = False
    """Set for static-token readers and writers: they may read everything, no review."""


@dataclass(frozen=True)
class Scope:
    """What a read covers: one tenant's entries, or (``tenant`` None) the whole log."""

    tenant: str | None = None
    """The tenant, or None for the whole log."""

    def __str__(self) -> str:
        return "the whole log" if self.tenant is None else f"tenant {self.tenant}"


class ReaderAuthority(Protocol):
    """Authenticates bearer tokens and authorises reads (e.g. against Kubernetes)."""

    def authenticate(self, token: str) -> Reader | None:
        """The reader behind ``token``, or None if it is not accepted.

        Raises :class:`AccessUnavailable` when it cannot tell.
        """
        ...

    def may_read(self, reader: Reader, scope: Scope, verb: Verb) -> bool:
        """Whether ``reader`` may ``verb`` in ``scope``; raises AccessUnavailable."""
        ...


class CachedAuthority:
    """A :class:`ReaderAuthority` in front of another, remembering answers briefly.

    Thread-safe. ``ttl`` 0 turns the cache off. See the module docstring for what is
    kept and for how long.
    """

    def __init__(
        self,
        inner: ReaderAuthority,
        *,
        ttl: float = DEFAULT_CACHE_SECONDS,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or size < 1:
            raise ValueError("the cache needs ttl >= 0 and size >= 1")
        self.inner = inner
        """The authority asked on a miss."""
        self.ttl = ttl
        """Seconds an answer is reused."""
        self._size = size
        self._clock = clock
        self._readers: OrderedDict[bytes, tuple[Reader, float]] = OrderedDict()
        self._decisions: OrderedDict[tuple[bytes, str | None, str], tuple[bool, float]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"CachedAuthority(ttl={self.ttl}, inner={self.inner!r})"

    def _get(self, cache: OrderedDict[_K, tuple[_V, float]], key: _K) -> _V | None:
        with self._lock:
            hit = cache.get(key)
            if hit is None:
                return None
            if hit[1] <= self._clock():
                del cache[key]
                return None
            cache.move_to_end(key)
            return hit[0]

    def _put(self, cache: OrderedDict[_K, tuple[_V, float]], key: _K, value: _V) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            cache[key] = (value, self._clock() + self.ttl)
            cache.move_to_end(key)
            while len(cache) > self._size:
                cache.popitem(last=False)

    @staticmethod
    def _reader_key(reader: Reader) -> bytes:
        parts = [reader.name, reader.uid or "", *sorted(reader.groups)]
        parts += [f"{k}={v}" for k, values in sorted(reader.extra.items()) for v in values]
        return hashlib.sha256("\x00".join(parts).encode()).digest()

    def authenticate(self, token: str) -> Reader | None:
        """The reader behind ``token`` (cached once accepted)."""
        key = hashlib.sha256(token.encode()).digest()
        found = self._get(self._readers, key)
        if found is not None:
            return found
        reader = self.inner.authenticate(token)
        if reader is not None:
            self._put(self._readers, key, reader)
        return reader

    def may_read(self, reader: Reader, scope: Scope, verb: Verb) -> bool:
        """Whether ``reader`` may ``verb`` in ``scope`` (cached, allowed or refused)."""
        key = (self._reader_key(reader), scope.tenant, verb)
        found = self._get(self._decisions, key)
        if found is not None:
            return found
        allowed = self.inner.may_read(reader, scope, verb)
        self._put(self._decisions, key, allowed)
        return allowed

    def forget(self) -> None:
        """Drop every remembered answer."""
        with self._lock:
            self._readers.clear()
            self._decisions.clear()
