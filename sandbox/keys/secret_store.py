"""Wrapped sandbox keys and the key-encryption key, kept in Kubernetes Secrets.

One Secret per sandbox (``regsandbox-key-<sandbox id>``) in the operator's own
namespace holds the AES-GCM-wrapped data key; deleting it is the crypto-shredding
step of the ``local`` provider. The KEK lives in ``regsandbox-kek`` in the same
namespace, created on first start.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from typing import TYPE_CHECKING, Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.keys.base import KeyProviderError
from sandbox.keys.local import generate_kek
from sandbox.kube.apply import create, delete, get, list_objects
from sandbox.kube.apply import replace as replace_object
from sandbox.provision.names import managed_labels

if TYPE_CHECKING:
    from sandbox.kube.versions import VersionIndex

__all__ = ["KEK_SECRET", "SecretWrappedKeyStore", "load_or_create_kek"]

KEK_SECRET = "regsandbox-kek"  # noqa: S105 - a Secret's name, not a secret
"""Name of the Secret holding the key-encryption key."""

_PREFIX = "regsandbox-key-"


def _secret_name(sandbox_id: str) -> str:
    name = f"{_PREFIX}{sandbox_id}"
    if len(name) <= 253:
        return name
    return f"{_PREFIX}{hashlib.sha256(sandbox_id.encode()).hexdigest()}"


def _read(api: client.ApiClient, namespace: str, name: str) -> bytes | None:
    secret = get(api, "Secret", name, namespace)
    data = ((secret or {}).get("data") or {}).get("value")
    return base64.b64decode(data) if data else None


def _secret(name: str, namespace: str, blob: bytes, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "data": {"value": base64.b64encode(blob).decode("ascii")},
    }


class SecretWrappedKeyStore:
    """A ``WrappedKeyStore`` backed by one Secret per sandbox."""

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        cache_seconds: float = 60.0,
        versions: VersionIndex | None = None,
    ) -> None:
        """Keep wrapped keys in ``namespace`` (the operator's own).

        Wrapped keys read or written are remembered for ``cache_seconds``: they are
        ciphertext, and every reconcile needs them, so this saves an API read per
        sandbox per resync. A destroy forgets at once. With ``versions``, a remembered
        key is used after that too for as long as the index shows its Secret at the
        version it was read or written at (a rewrap or deletion by another process
        changes that version, and the Secret is read again).
        """
        self._api = api
        self._namespace = namespace
        self._cache_seconds = cache_seconds
        self._versions = versions
        self._cache: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()

    def _as_stored(self, sandbox_id: str, blob: bytes) -> dict[str, Any]:
        """The Secret's identity and value, as the version index fingerprints it."""
        return {
            "kind": "Secret",
            "metadata": {"name": _secret_name(sandbox_id), "namespace": self._namespace},
            "data": {"value": base64.b64encode(blob).decode("ascii")},
        }

    def _remember(self, sandbox_id: str, blob: bytes, live: dict[str, Any] | None = None) -> None:
        """Cache ``blob``; ``live`` is the Secret as the API server showed it holding it."""
        with self._lock:
            self._cache[sandbox_id] = (time.monotonic() + self._cache_seconds, blob)
        if live is not None and self._versions is not None:
            self._versions.vouch(self._as_stored(sandbox_id, blob), live)

    def _unchanged(self, sandbox_id: str, blob: bytes) -> bool:
        """Whether the index shows the Secret still at a version seen holding ``blob``."""
        return self._versions is not None and self._versions.unchanged(
            self._as_stored(sandbox_id, blob)
        )

    def _forget(self, sandbox_id: str) -> None:
        with self._lock:
            self._cache.pop(sandbox_id, None)

    def __repr__(self) -> str:
        return f"SecretWrappedKeyStore(namespace={self._namespace!r})"

    def get(self, sandbox_id: str, *, fresh: bool = False) -> bytes | None:
        """The wrapped key of ``sandbox_id``, or None; ``fresh`` asks the API server."""
        with self._lock:
            cached = None if fresh else self._cache.get(sandbox_id)
        if cached is not None and (
            cached[0] > time.monotonic() or self._unchanged(sandbox_id, cached[1])
        ):
            return cached[1]
        secret = get(self._api, "Secret", _secret_name(sandbox_id), self._namespace)
        data = ((secret or {}).get("data") or {}).get("value")
        blob = base64.b64decode(data) if data else None
        if blob is not None:
            self._remember(sandbox_id, blob, secret)
        return blob

    def put(self, sandbox_id: str, blob: bytes, *, replace: bool = False) -> bytes:
        """Create (or with ``replace`` overwrite) the Secret; return what is stored."""
        body = _secret(
            _secret_name(sandbox_id),
            self._namespace,
            blob,
            managed_labels(key="wrapped-data-key"),
        )
        body["metadata"]["annotations"] = {"regsandbox.io/sandbox-id": sandbox_id}
        if replace:
            try:
                replace_object(self._api, body)
                self._remember(sandbox_id, blob)
                return blob
            except ApiException as exc:
                if exc.status != 404:
                    raise
        try:
            written = create(self._api, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self._forget(sandbox_id)
            stored = self.get(sandbox_id)
            if stored is None:
                raise
            return stored
        self._remember(sandbox_id, blob, written)
        return blob

    def delete(self, sandbox_id: str) -> bool:
        """Delete the Secret; True if it existed."""
        self._forget(sandbox_id)
        # Background: the Secret (the wrapped key) is gone when this returns.
        return delete(
            self._api,
            "Secret",
            _secret_name(sandbox_id),
            self._namespace,
            propagation="Background",
        )

    def swap(self, sandbox_id: str, expected: bytes, blob: bytes) -> bool:
        """Replace the Secret's value only if it still holds ``expected``.

        The patch carries the ``resourceVersion`` that was compared, so the API server
        refuses it (409) if the Secret changed meanwhile, and a deleted Secret (404) is
        never re-created: a rotation racing a destroy cannot bring a key back. A patch
        needs only the ``patch`` verb the operator's ClusterRole grants.
        """
        name = _secret_name(sandbox_id)
        self._forget(sandbox_id)
        current = get(self._api, "Secret", name, self._namespace)
        data = ((current or {}).get("data") or {}).get("value")
        if current is None or not data or base64.b64decode(data) != expected:
            return False
        body = {
            "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            "data": {"value": base64.b64encode(blob).decode("ascii")},
        }
        try:
            client.CoreV1Api(self._api).patch_namespaced_secret(name, self._namespace, body)
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        self._remember(sandbox_id, blob)
        return True

    def confirm_absent(self, sandbox_id: str) -> str:
        """GET the Secret from the API server (never the cache); it must answer 404."""
        self._forget(sandbox_id)
        name = _secret_name(sandbox_id)
        if get(self._api, "Secret", name, self._namespace) is not None:
            raise KeyProviderError(
                f"Secret {self._namespace}/{name} can still be read after its deletion; "
                "the wrapped key is NOT destroyed (a finalizer or admission webhook may "
                "hold it) — retry"
            )
        return f"GET Secret {self._namespace}/{name} from the API server: 404 Not Found"

    def ids(self) -> list[str]:
        """Sandbox ids with a stored key."""
        secrets = list_objects(
            self._api, "Secret", self._namespace, "regsandbox.io/key=wrapped-data-key"
        )
        found = (
            ((s.get("metadata") or {}).get("annotations") or {}).get("regsandbox.io/sandbox-id")
            for s in secrets
        )
        return sorted(str(sandbox_id) for sandbox_id in found if sandbox_id)


def load_or_create_kek(api: client.ApiClient, namespace: str) -> bytes:
    """The KEK from ``regsandbox-kek``; made (once, race-safe) when absent."""
    existing = _read(api, namespace, KEK_SECRET)
    if existing is not None:
        return existing
    body = _secret(KEK_SECRET, namespace, generate_kek(), managed_labels(key="kek"))
    body["immutable"] = True
    try:
        create(api, body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    stored = _read(api, namespace, KEK_SECRET)
    if stored is None:
        raise RuntimeError(f"{namespace}/{KEK_SECRET} vanished right after it was created")
    return stored
