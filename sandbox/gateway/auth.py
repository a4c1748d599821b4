"""Authentication: a projected ServiceAccount token, checked by a TokenReview.

The API server is the only judge of a token. :class:`TokenReviewer` asks it with the
gateway's audience and turns a positive answer into an :class:`Identity`. Positive
answers are cached briefly so that a busy pod does not cost one review per request:

- the cache key is the SHA-256 of the token, never the token itself;
- only positive reviews are cached (a refused or failed review is asked again);
- an entry lives at most ``cache_seconds`` and never past the token's own ``exp``
  (read from the JWT payload only to bound the cache; the signature is the API
  server's business) - tokens without a readable ``exp`` are not cached at all;
- the cache holds at most ``cache_size`` entries, oldest evicted first.

A deleted pod invalidates its bound token at the API server at once; through the cache
it stops working within ``cache_seconds``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import urllib3
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.errors import SandboxError

__all__ = [
    "POD_NAME_EXTRA",
    "POD_UID_EXTRA",
    "Identity",
    "ReviewUnavailable",
    "TokenReviewer",
    "Unauthenticated",
    "token_expiry",
]

POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
"""TokenReview ``user.extra`` key naming the pod a token is bound to."""
POD_UID_EXTRA = "authentication.kubernetes.io/pod-uid"
"""TokenReview ``user.extra`` key with that pod's UID."""

_SA_PREFIX = "system:serviceaccount:"
_MAX_TOKEN_BYTES = 16 * 1024


class Unauthenticated(SandboxError):  # noqa: N818 - the HTTP meaning, 401
    """The request carries no acceptable token; ``reason`` is a CamelCase code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReviewUnavailable(SandboxError):  # noqa: N818 - the HTTP meaning, 503
    """The API server could not review the token; fail closed and let the client retry."""


@dataclass(frozen=True)
class Identity:
    """A workload the API server vouched for."""

    namespace: str
    """Namespace of its ServiceAccount: the sandbox namespace, if it is one."""
    service_account: str
    """Name of the ServiceAccount."""
    pod: str | None
    """Name of the pod the token is bound to, if any."""
    pod_uid: str | None
    """UID of that pod."""

    @property
    def service_account_ref(self) -> str:
        """``namespace/name`` of the ServiceAccount, as the audit log records it."""
        return f"{self.namespace}/{self.service_account}"

    @property
    def pod_ref(self) -> str | None:
        """``namespace/name`` of the pod, as the audit log records it."""
        return f"{self.namespace}/{self.pod}" if self.pod else None


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix seconds) of a JWT, unverified; None if there is none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


def _one(extra: dict[str, list[str]] | None, key: str) -> str | None:
    values = (extra or {}).get(key) or []
    return values[0] if len(values) == 1 and values[0] else None


class TokenReviewer:
    """Checks bearer tokens with TokenReview; thread-safe, with a safe positive cache."""

    def __init__(
        self,
        api: client.ApiClient,
        audience: str,
        *,
        cache_seconds: float = 10.0,
        cache_size: int = 10_000,
        timeout: float = 5.0,
        require_pod_binding: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._api = client.AuthenticationV1Api(api)
        self.audience = audience
        """The audience every accepted token must carry."""
        self._ttl = cache_seconds
        self._size = cache_size
        self._timeout = timeout
        self._require_pod = require_pod_binding
        self._clock = clock
        self._cache: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TokenReviewer(audience={self.audience!r}, cached={len(self._cache)})"

    def cached(self, token: str | None) -> Identity | None:
        """The identity behind ``token`` if a review of it is cached, else ``None``.

        Makes no request, so it can run on an event loop; raises Unauthenticated for a
        missing or malformed token, exactly as :meth:`review` would.
        """
        if not token:
            raise Unauthenticated("MissingToken", "no bearer token; send a projected token")
        if len(token) > _MAX_TOKEN_BYTES or not token.isascii() or not token.isprintable():
            raise Unauthenticated("MalformedToken", "the bearer token is malformed")
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                if hit[1] > now:
                    self._cache.move_to_end(key)
                    return hit[0]
                del self._cache[key]
        return None

    def review(self, token: str | None) -> Identity:
        """The identity behind ``token``; raises Unauthenticated or ReviewUnavailable."""
        found = self.cached(token)
        if found is not None:
            return found
        token = str(token)  # cached() has refused a missing one
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        identity = self._ask(token)
        expiry = token_expiry(token)
        if self._ttl > 0 and expiry is not None and expiry > now:
            until = min(now + self._ttl, expiry)
            with self._lock:
                self._cache[key] = (identity, until)
                self._cache.move_to_end(key)
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
        return identity

    def forget(self) -> None:
        """Drop every cached review."""
        with self._lock:
            self._cache.clear()

    def _ask(self, token: str) -> Identity:
        body = client.V1TokenReview(
            api_version="authentication.k8s.io/v1",
            kind="TokenReview",
            spec=client.V1TokenReviewSpec(token=token, audiences=[self.audience]),
        )
        try:
            result = self._api.create_token_review(body, _request_timeout=self._timeout)
        except ApiException as exc:
            # Never echo the exception text: it could carry request details.
            raise ReviewUnavailable(f"TokenReview failed with HTTP {exc.status}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ReviewUnavailable(f"TokenReview failed: {type(exc).__name__}") from None
        status = result.status
        if status is None or not status.authenticated or status.user is None:
            raise Unauthenticated(
                "TokenRejected", "the API server did not accept the token for this audience"
            )
        if self.audience not in (status.audiences or []):
            raise Unauthenticated("WrongAudience", f"the token is not meant for {self.audience}")
        username = status.user.username or ""
        if not username.startswith(_SA_PREFIX) or username.count(":") != 3:
            raise Unauthenticated("NotServiceAccount", "only ServiceAccount tokens are accepted")
        namespace, _, name = username[len(_SA_PREFIX) :].partition(":")
        if not namespace or not name:
            raise Unauthenticated("NotServiceAccount", "only ServiceAccount tokens are accepted")
        pod = _one(status.user.extra, POD_NAME_EXTRA)
        if self._require_pod and pod is None:
            raise Unauthenticated("TokenNotPodBound", "the token must be bound to a pod")
        return Identity(namespace, name, pod, _one(status.user.extra, POD_UID_EXTRA))
