"""Console sessions: an opaque cookie naming a short-lived session held by the service.

After an officer signs in with a Kubernetes token, the browser gets a random 256-bit
session id in an HttpOnly, SameSite=Strict cookie (Secure over TLS); the token stays in
the service's memory, keyed by the SHA-256 of that id. So the token never travels in a
URL, a page or the cookie, and signing out ends the session on the server, not just in
the browser. Every page still sends the token through the same TokenReview and
SubjectAccessReview as the JSON API, so a revoked binding or an expired token stops a
session within the access cache's lifetime, whatever the session's own lifetime.

Sessions live in memory: a restart signs everyone out (they sign in again).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_SESSION_SECONDS", "Session", "SessionStore"]

DEFAULT_SESSION_SECONDS = 900.0
"""How long a console session lasts, by default (15 minutes, not extended by use)."""


@dataclass(frozen=True)
class Session:
    """A signed-in officer."""

    token: str
    """Their bearer token, checked again on every page."""
    tenant: str | None
    """The tenant they signed in to read, or None for the whole log."""
    reader: str
    """Their name, as the token review gave it."""
    csrf: str
    """The token a form of this session must carry (sign out)."""
    expires: float
    """When the session ends (the store's clock)."""


def _key(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


class SessionStore:
    """Sessions by id, bounded in number and lifetime; thread-safe.

    Each reader keeps at most ``per_reader`` sessions (their newest), so one officer
    signing in again and again cannot push everyone else's sessions out of the bound.
    """

    def __init__(
        self,
        lifetime: float = DEFAULT_SESSION_SECONDS,
        *,
        size: int = 10_000,
        per_reader: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lifetime <= 0 or size < 1 or per_reader < 1:
            raise ValueError("sessions need a positive lifetime and size")
        self._per_reader = per_reader
        self.lifetime = lifetime
        """Seconds a session lasts."""
        self._size = size
        self._clock = clock
        self._sessions: OrderedDict[bytes, Session] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SessionStore(lifetime={self.lifetime}, open={len(self._sessions)})"

    def open(self, token: str, tenant: str | None, reader: str) -> tuple[str, Session]:
        """A new session; returns its id (for the cookie) and the session."""
        session_id = secrets.token_urlsafe(32)
        session = Session(
            token, tenant, reader, secrets.token_urlsafe(32), self._clock() + self.lifetime
        )
        with self._lock:
            own = [k for k, s in self._sessions.items() if s.reader == reader]
            for key in own[: max(0, len(own) - self._per_reader + 1)]:
                del self._sessions[key]
            self._sessions[_key(session_id)] = session
            while len(self._sessions) > self._size:
                self._sessions.popitem(last=False)
        return session_id, session

    def get(self, session_id: str) -> Session | None:
        """The live session of ``session_id``, or None (unknown or expired)."""
        key = _key(session_id)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if session.expires <= self._clock():
                del self._sessions[key]
                return None
            return session

    def close(self, session_id: str) -> None:
        """End a session (sign out); unknown ids are ignored."""
        with self._lock:
            self._sessions.pop(_key(session_id), None)
