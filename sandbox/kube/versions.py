"""Which objects changed since the operator last saw them hold, without reading them back.

A drift check must know whether every object the operator wrote still holds what it
set. Reading each one back on every check costs the API server a request per object,
per sandbox, per interval — at a thousand sandboxes more than provisioning them did.
The API server bumps an object's ``resourceVersion`` on every change, so an object
whose version is the one the operator last saw holding what it wanted (the answer to
its own write, or a read) has not changed since, and still holds.

:class:`VersionIndex` keeps the current version of every object of a few kinds from
metadata-only watches (names and versions, never contents), and the versions the
operator vouched for with a fingerprint of what it wanted then. Whenever it cannot
vouch for being current — a kind not listed yet, or no answer from the API server for
``stale_after`` seconds — it answers "unknown" and the caller reads the object as
before. Secrets are never watched: the operator's identity may not watch Secrets
(a watch from an old revision would replay deleted wrapped keys; see
docs/key-custody.md). Their versions come instead from a metadata-only LIST of the
operator's own Secrets (label ``app.kubernetes.io/managed-by=regsandbox``, the ``list``
the operator already has), made when a check asks and the last one is older than
``list_fresh_for`` seconds, and shared by every check meanwhile: a few LISTs per
interval instead of a GET per sandbox per check. A Secret changed after the LIST a
check relied on is seen by the next check, so such a change is corrected within one
drift interval plus ``list_fresh_for``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import urllib3
from kubernetes import client

from sandbox.kube.apply import KINDS

__all__ = ["ALL_OBJECTS_KINDS", "LISTED_KINDS", "WATCHED_KINDS", "VersionIndex", "fingerprint"]

_log = logging.getLogger(__name__)

WATCHED_KINDS = (
    "Namespace",
    "StorageClass",
    "LimitRange",
    "NetworkPolicy",
    "ResourceQuota",
    "PersistentVolumeClaim",
    "ServiceAccount",
    "Role",
    "RoleBinding",
)
"""Kinds of a sandbox's objects the index follows (every one but Secrets)."""

LISTED_KINDS = ("Secret",)
"""Kinds the index learns by listing (metadata only, on demand), never by watching."""

ALL_OBJECTS_KINDS = frozenset({"NetworkPolicy", "Role", "RoleBinding"})
"""Kinds followed whoever made them: one the operator did not make weakens isolation."""

_MANAGED = "app.kubernetes.io/managed-by=regsandbox"
_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
_WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

Key = tuple[str, str]
"""(namespace or "", name)."""


def fingerprint(obj: Mapping[str, Any]) -> bytes:
    """A digest of what the operator wants an object to hold."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _key(obj: Mapping[str, Any]) -> Key:
    # Interned: a sandbox's dozen objects share one namespace string, and every
    # sandbox's objects the same few names.
    meta = obj.get("metadata") or {}
    return sys.intern(str(meta.get("namespace") or "")), sys.intern(str(meta.get("name") or ""))


def _stamp(version: str, wanted: bytes) -> bytes:
    """One digest of a version and a fingerprint (what is kept per vouched object)."""
    return hashlib.blake2b(version.encode() + b"\0" + wanted, digest_size=16).digest()


class _GoneError(Exception):
    """The watch's starting version is too old (410): list again."""


@dataclass
class _Kind:
    """One kind's current versions and how current they are known to be."""

    name: str
    versions: dict[Key, str] = field(default_factory=dict)
    vouched: dict[Key, bytes] = field(default_factory=dict)
    synced: bool = False
    contact: float = 0.0
    """When the API server last answered this kind's list or watch (monotonic); for a
    listed kind, when its last LIST was sent (what it shows is at least that recent)."""
    listed: bool = False
    """Learnt by on-demand LISTs only (:data:`LISTED_KINDS`), never watched."""
    listing: threading.Lock = field(default_factory=threading.Lock)
    """Held while a listed kind is being listed: checks meanwhile wait for that LIST."""


class VersionIndex:
    """Current ``resourceVersion`` of every object of :data:`WATCHED_KINDS`, and the
    versions the operator has seen holding what it wanted.

    :meth:`start` runs one watch thread per kind on a connection pool of its own.
    """

    def __init__(
        self,
        api: client.ApiClient,
        kinds: tuple[str, ...] = WATCHED_KINDS,
        *,
        stale_after: float = 150.0,
        watch_seconds: int = 60,
        listed: tuple[str, ...] = LISTED_KINDS,
        list_fresh_for: float = 5.0,
    ) -> None:
        """Follow ``kinds``; trust the index only within ``stale_after`` seconds of the
        API server's last answer (each watch is renewed every ``watch_seconds``).

        ``listed`` kinds are listed when asked about, at most once per
        ``list_fresh_for`` seconds, and trusted for that long after each LIST.
        """
        if stale_after <= watch_seconds:
            raise ValueError("stale_after must exceed watch_seconds")
        if "Secret" in kinds:
            raise ValueError("Secrets are never watched: they are listed (see above)")
        if set(listed) - set(LISTED_KINDS):
            raise ValueError(f"only {LISTED_KINDS} are learnt by listing")
        if list_fresh_for <= 0:
            raise ValueError("list_fresh_for must be positive")
        self._api = client.ApiClient(api.configuration)  # watches hold their connections
        self._stale_after = stale_after
        self._watch_seconds = watch_seconds
        self._list_fresh_for = list_fresh_for
        self._kinds = {kind: _Kind(kind) for kind in kinds}
        self._kinds.update({kind: _Kind(kind, listed=True) for kind in listed})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        synced = sorted(k for k, state in self._kinds.items() if state.synced)
        return f"VersionIndex(kinds={sorted(self._kinds)}, synced={synced})"

    # -- answers ---------------------------------------------------------------------

    def _current(self, kind: str) -> _Kind | None:
        """The kind's state if it can be trusted now (call with the lock held)."""
        state = self._kinds.get(kind)
        if state is None or not state.synced:
            return None
        trusted_for = self._list_fresh_for if state.listed else self._stale_after
        if time.monotonic() - state.contact > trusted_for:
            return None
        return state

    def unchanged(self, desired: Mapping[str, Any]) -> bool:
        """Whether the live object is, version for version, one the operator saw holding
        exactly ``desired``. False whenever the index cannot tell."""
        key = _key(desired)
        kind = str(desired["kind"])
        state = self._kinds.get(kind)
        if state is not None and state.listed:
            self._list_if_stale(state)
        with self._lock:
            state = self._current(kind)
            if state is None:
                return False
            version = state.versions.get(key)
            vouched = state.vouched.get(key)
        return (
            version is not None
            and vouched is not None
            and vouched == _stamp(version, fingerprint(desired))
        )

    def vouch(self, desired: Mapping[str, Any], live: Mapping[str, Any]) -> None:
        """Remember that ``live`` (as read, or as the API server answered a write) holds
        ``desired``; the caller has checked that it does."""
        state = self._kinds.get(str(desired["kind"]))
        version = (live.get("metadata") or {}).get("resourceVersion")
        if state is None or not version:
            return
        stamp = _stamp(str(version), fingerprint(desired))
        with self._lock:
            state.vouched[_key(desired)] = stamp

    def names(self, kind: str, namespace: str) -> set[str] | None:
        """Names of every ``kind`` object in ``namespace``, or None if the index cannot tell.

        Only for :data:`ALL_OBJECTS_KINDS`; other kinds are followed for the operator's
        own objects only.
        """
        if kind not in ALL_OBJECTS_KINDS:
            raise ValueError(f"{kind} is followed for regsandbox's own objects only")
        with self._lock:
            state = self._current(kind)
            if state is None:
                return None
            return {name for ns, name in state.versions if ns == namespace}

    # -- listing and watching --------------------------------------------------------

    def _list_if_stale(self, state: _Kind) -> None:
        """List a listed kind unless a LIST sent within ``list_fresh_for`` answered.

        One LIST at a time; checks asking meanwhile wait for it and share its answer.
        A failure leaves the kind unknown (the caller reads the object back).
        """
        with state.listing:
            with self._lock:
                fresh = self._current(state.name) is not None
            if fresh or self._stop.is_set():
                return
            try:
                self._list(state.name)
            except Exception as exc:  # unknown: the caller reads the object instead
                _log.warning("listing %s failed: %s", state.name, exc)
                self._unsynced(state.name)

    def start(self) -> VersionIndex:
        """Start one daemon thread per watched kind; returns self."""
        for kind in (k for k, state in self._kinds.items() if not state.listed):
            thread = threading.Thread(
                target=self._follow, args=(kind,), name=f"versions-{kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop following (threads end when their current request returns)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def wait_synced(self, timeout: float) -> bool:
        """Wait until every watched kind has been listed; whether it was within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not all(state.synced for state in self._kinds.values() if not state.listed):
            if time.monotonic() > deadline or self._stop.wait(0.05):
                return False
        return True

    def _follow(self, kind: str) -> None:
        delay = 0.5
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(kind)
                version = self._watch(kind, version)
                delay = 0.5
            except _GoneError:  # events were missed: unknown until listed again
                self._unsynced(kind)
                version = None
            except Exception as exc:  # any failure: answer "unknown" until listed again
                _log.warning("watching %s failed, retrying in %.1fs: %s", kind, delay, exc)
                self._unsynced(kind)
                version = None
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    def _unsynced(self, kind: str) -> None:
        with self._lock:
            self._kinds[kind].synced = False

    def _path(self, kind: str) -> str:
        info = KINDS[kind]
        return f"{info.prefix}/{info.plural}"

    def _selector(self, kind: str) -> list[tuple[str, str]]:
        return [] if kind in ALL_OBJECTS_KINDS else [("labelSelector", _MANAGED)]

    def _request(
        self, path: str, params: list[tuple[str, str]], accept: str, read_timeout: float
    ) -> urllib3.BaseHTTPResponse:
        api = self._api
        headers = {**api.default_headers, "Accept": accept}
        query = list(params)
        api.update_params_for_auth(headers, query, ["BearerToken"])
        host = api.configuration.host.rstrip("/")
        url = f"{host}{path}?{urlencode(query)}"
        response: urllib3.BaseHTTPResponse = api.rest_client.pool_manager.request(
            "GET",
            url,
            headers=headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=10.0, read=read_timeout),
        )
        if response.status == 410:
            response.release_conn()
            raise _GoneError
        if response.status != 200:
            body = response.read(2048)
            response.release_conn()
            raise RuntimeError(f"GET {path}: HTTP {response.status}: {body[:300]!r}")
        return response

    def _list(self, kind: str) -> str:
        """List ``kind`` (metadata only, in pages); replace its versions; the list's version."""
        sent = time.monotonic()
        versions: dict[Key, str] = {}
        token = ""
        while True:
            params = [*self._selector(kind), ("limit", "500")]
            if token:
                params.append(("continue", token))
            response = self._request(self._path(kind), params, _LIST_ACCEPT, 60.0)
            try:
                page = json.loads(response.read())
            finally:
                response.release_conn()
            for item in page.get("items") or []:
                meta = item.get("metadata") or {}
                versions[_key(item)] = str(meta.get("resourceVersion") or "")
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                break
        state = self._kinds[kind]
        with self._lock:
            state.versions = versions
            state.vouched = {k: v for k, v in state.vouched.items() if k in versions}
            state.synced = True
            # A listed kind is only as current as the LIST's first page was when sent.
            state.contact = sent if state.listed else time.monotonic()
        return str((page.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, kind: str, version: str) -> str:
        """Follow ``kind`` from ``version`` until the server ends the watch; the last version."""
        params = [
            *self._selector(kind),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", version),
            ("timeoutSeconds", str(self._watch_seconds)),
        ]
        response = self._request(
            self._path(kind), params, _WATCH_ACCEPT, self._watch_seconds + 30.0
        )
        state = self._kinds[kind]
        with self._lock:
            state.contact = time.monotonic()
        try:
            for line in _lines(response):
                event = json.loads(line)
                obj = event.get("object") or {}
                kind_of_event = event.get("type")
                if kind_of_event == "ERROR":
                    if obj.get("code") == 410:
                        raise _GoneError
                    raise RuntimeError(f"watch of {kind} ended: {obj.get('message')}")
                meta = obj.get("metadata") or {}
                version = str(meta.get("resourceVersion") or version)
                with self._lock:
                    state.contact = time.monotonic()
                    if kind_of_event == "DELETED":
                        state.versions.pop(_key(obj), None)
                        state.vouched.pop(_key(obj), None)
                    elif kind_of_event in ("ADDED", "MODIFIED"):
                        state.versions[_key(obj)] = version
                if self._stop.is_set():
                    break
        finally:
            response.release_conn()
        with self._lock:
            state.contact = time.monotonic()
        return version


def _lines(response: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The newline-separated JSON documents of a watch response, as they arrive."""
    pending = b""
    for chunk in response.stream(65536):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending
