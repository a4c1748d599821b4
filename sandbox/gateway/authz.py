"""Authorisation: is this workload's sandbox usable, and is the dataset granted to it?

The operator owns the answer and publishes it on the Sandbox object; the gateway only
reads it (the contract):

- the token's namespace is a sandbox namespace: it carries the ``regsandbox.io/tenant``
  and ``regsandbox.io/sandbox`` labels, and its name is ``sbx-<tenant>-<sandbox>``;
- that Sandbox (in ``tenant-<tenant>``) has condition ``Ready=True``, a
  ``status.expiresAt`` in the future, and is not being deleted;
- ``status.datasets`` lists the dataset with ``granted: true``;
- the Dataset object exists and has a valid S3 location.

The status is read with the same model the operator writes it with
(:class:`~sandbox.api.sandbox.SandboxStatus`); a status the model does not accept (the
API server's schema, generated from that model, should never let one through) is
treated as an unreadable answer: 503, nothing served.

The same sandbox checks, without a dataset, decide whether a workload may write into
its sandbox's export outbox (:meth:`GrantResolver.active`).

Objects are read with GET (the gateway's RBAC allows nothing else) and reused for at
most ``cache_seconds``; expiry is evaluated on every request. Any doubt is a refusal.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from sandbox.api.dataset import DatasetLocation
from sandbox.api.sandbox import SandboxStatus
from sandbox.errors import SandboxError
from sandbox.kube.apply import object_path
from sandbox.provision.names import (
    LABEL_SANDBOX,
    LABEL_TENANT,
    sandbox_namespace,
    tenant_namespace,
)

__all__ = ["Forbidden", "Grant", "GrantResolver", "LookupUnavailable", "NotCached", "SandboxRef"]


@dataclass(frozen=True)
class SandboxRef:
    """The sandbox a namespace belongs to."""

    tenant: str
    """Owning tenant."""
    sandbox: str
    """Sandbox name (in the tenant's home namespace)."""
    namespace: str
    """The sandbox namespace."""


@dataclass(frozen=True)
class Grant:
    """Permission for one sandbox to read one dataset, as of the time it was checked."""

    sandbox: SandboxRef
    """Who may read."""
    dataset: str
    """Dataset name."""
    location: DatasetLocation
    """Where its objects are."""
    expires_at: dt.datetime
    """When the sandbox (and so the grant) ends."""


class Forbidden(SandboxError):  # noqa: N818 - the HTTP meaning, 403
    """Access refused; ``reason`` is a CamelCase code, ``sandbox`` what we learnt."""

    def __init__(self, reason: str, message: str, sandbox: SandboxRef | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.sandbox = sandbox


class LookupUnavailable(SandboxError):  # noqa: N818 - the HTTP meaning, 503
    """The API server could not be asked, or answered nonsense; fail closed."""


class NotCached(SandboxError):  # noqa: N818 - a signal, not a failure
    """A ``cached_only`` authorisation needs an object that is not cached: ask again."""


def _sandbox_status(obj: dict[str, Any], name: str) -> SandboxStatus:
    """The Sandbox's status as the typed model; LookupUnavailable if it is not one."""
    try:
        return SandboxStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        raise LookupUnavailable(f"sandbox {name} has a status this gateway cannot read") from None


def _is_ready(status: SandboxStatus) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in status.conditions)


class GrantResolver:
    """Reads Namespaces, Sandboxes and Datasets to decide grants; thread-safe.

    Objects are cached for ``cache_seconds`` (the longest a revoked grant can still be
    honoured). An object read again in the second half of that time is refreshed in
    the background while the cached copy, still within its time, answers; so under
    steady traffic no request waits for the API server, and the bound is unchanged.
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        cache_seconds: float = 1.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._api = api
        self._ttl = cache_seconds
        self._timeout = timeout
        self._clock = clock
        self._now = now
        self._cache: dict[str, tuple[dict[str, Any] | None, float]] = {}
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()
        self._refresher = ThreadPoolExecutor(max_workers=2, thread_name_prefix="grant-refresh")

    def __repr__(self) -> str:
        return f"GrantResolver(cache_seconds={self._ttl})"

    def close(self) -> None:
        """Stop the background refreshes (waiting for any under way)."""
        self._refresher.shutdown(wait=True, cancel_futures=True)

    def _refresh_soon(self, path: str, kind: str, name: str) -> None:
        with self._lock:
            if path in self._refreshing:
                return
            self._refreshing.add(path)
        try:
            self._refresher.submit(self._refresh, path, kind, name)
        except RuntimeError:  # shut down
            with self._lock:
                self._refreshing.discard(path)

    def _refresh(self, path: str, kind: str, name: str) -> None:
        try:
            self._fetch(path, kind, name)
        except LookupUnavailable:
            pass  # the cached copy expires as usual; the next request reads it itself
        finally:
            with self._lock:
                self._refreshing.discard(path)

    def _get(
        self, kind: str, name: str, namespace: str | None = None, *, cached_only: bool = False
    ) -> dict[str, Any] | None:
        path = object_path(kind, name, namespace)
        now = self._clock()
        if self._ttl > 0:
            with self._lock:
                hit = self._cache.get(path)
            if hit is not None and hit[1] > now:
                if hit[1] - now < self._ttl / 2:
                    self._refresh_soon(path, kind, name)
                return hit[0]
        if cached_only:
            raise NotCached(path)
        return self._fetch(path, kind, name)

    def _fetch(self, path: str, kind: str, name: str) -> dict[str, Any] | None:
        """Read ``path`` from the API server and cache the answer (also a 404)."""
        now = self._clock()
        try:
            result = self._api.call_api(
                path,
                "GET",
                header_params={"Accept": "application/json"},
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=True,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise LookupUnavailable(
                    f"reading {kind} {name} failed: HTTP {exc.status}"
                ) from None
            result = None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise LookupUnavailable(f"reading {kind} {name} failed: {type(exc).__name__}") from None
        if result is not None and not isinstance(result, dict):
            raise LookupUnavailable(f"reading {kind} {name} gave a malformed answer")
        if self._ttl > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[path] = (result, now + self._ttl)
        return result

    def sandbox_of(self, namespace: str, *, cached_only: bool = False) -> SandboxRef:
        """The sandbox whose namespace is ``namespace``; Forbidden if it is none."""
        ns = self._get("Namespace", namespace, cached_only=cached_only)
        labels = ((ns or {}).get("metadata") or {}).get("labels") or {}
        tenant, sandbox = labels.get(LABEL_TENANT), labels.get(LABEL_SANDBOX)
        if (
            not isinstance(tenant, str)
            or not isinstance(sandbox, str)
            or sandbox_namespace(tenant, sandbox) != namespace
        ):
            raise Forbidden("NotASandbox", f"namespace {namespace} is not a sandbox namespace")
        return SandboxRef(tenant, sandbox, namespace)

    def active(
        self, namespace: str, *, cached_only: bool = False
    ) -> tuple[SandboxRef, dt.datetime, SandboxStatus]:
        """The sandbox of ``namespace`` if it may act now, its expiry and its status.

        It may act when its Sandbox exists, is this namespace's, is not being deleted,
        is ``Ready`` (a quarantined or expired sandbox is not) and ``status.expiresAt``
        is in the future; otherwise Forbidden. ``cached_only`` as for :meth:`authorize`.
        """
        ref = self.sandbox_of(namespace, cached_only=cached_only)
        obj = self._get(
            "Sandbox", ref.sandbox, tenant_namespace(ref.tenant), cached_only=cached_only
        )
        if obj is None:
            raise Forbidden("SandboxNotFound", f"sandbox {ref.sandbox} does not exist", ref)
        status = _sandbox_status(obj, ref.sandbox)
        if status.namespace not in (None, namespace):
            raise Forbidden("NotASandbox", f"namespace {namespace} is not this sandbox's", ref)
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            raise Forbidden("SandboxTerminating", f"sandbox {ref.sandbox} is being deleted", ref)
        if not _is_ready(status):
            raise Forbidden("SandboxNotReady", f"sandbox {ref.sandbox} is not Ready", ref)
        expires = status.expires_at
        if expires is None or expires.tzinfo is None or expires <= self._now():
            raise Forbidden("SandboxExpired", f"sandbox {ref.sandbox} has expired", ref)
        return ref, expires, status

    def authorize(self, namespace: str, dataset: str, *, cached_only: bool = False) -> Grant:
        """The grant for the sandbox of ``namespace`` to read ``dataset``, or Forbidden.

        With ``cached_only`` no request is made (it can run on an event loop): when an
        object it needs is not cached, :class:`NotCached` is raised instead.
        """
        ref, expires, status = self.active(namespace, cached_only=cached_only)
        if not any(g.name == dataset and g.granted for g in status.datasets):
            raise Forbidden(
                "DatasetNotGranted", f"dataset {dataset} is not granted to this sandbox", ref
            )
        data = self._get("Dataset", dataset, cached_only=cached_only)
        if data is None or (data.get("metadata") or {}).get("deletionTimestamp"):
            raise Forbidden("DatasetNotFound", f"dataset {dataset} does not exist", ref)
        try:
            location = DatasetLocation.model_validate((data.get("spec") or {}).get("location"))
        except ValidationError:
            raise LookupUnavailable(f"dataset {dataset} has no valid location") from None
        return Grant(ref, dataset, location, expires)

    def forget(self) -> None:
        """Drop every cached object."""
        with self._lock:
            self._cache.clear()
