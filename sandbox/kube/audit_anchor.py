"""The audit log's checkpoint anchor in a ConfigMap only the audit service may update.

Whoever can write to the audit log's volume must not be able to rewrite what the log
remembers having signed (:mod:`audit.anchor`). In Kubernetes the anchor is one ConfigMap,
created empty by the chart; the audit service's ServiceAccount gets ``get`` and
``update`` on that one object name (a Role with ``resourceNames``) and nothing else, so
neither the volume's writers nor tenants can move it.

The API server gives compare-and-swap for free: an update that carries
``metadata.resourceVersion`` is refused with 409 Conflict if the object changed since
that version was read. The ConfigMap's ``resourceVersion`` is therefore the anchor's
version, and the signed checkpoint note is stored verbatim under :data:`DATA_KEY`
(a note is UTF-8 text).
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from audit.anchor import AnchorRecord
from audit.errors import AnchorConflictError, StorageError

__all__ = ["DATA_KEY", "ConfigMapCheckpointAnchor"]

DATA_KEY = "checkpoint"
"""Key of the ConfigMap's ``data`` holding the signed checkpoint note."""


class ConfigMapCheckpointAnchor:
    """A :class:`audit.anchor.CheckpointAnchor` kept in ConfigMap ``namespace/name``."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace
        """Namespace of the ConfigMap."""
        self.name = name
        """Name of the ConfigMap."""
        self._last: Any = None  # the object as last read or written: saves a GET per swap

    @property
    def description(self) -> str:
        """``ConfigMap <namespace>/<name>``."""
        return f"ConfigMap {self.namespace}/{self.name}"

    def _fail(self, verb: str, exc: ApiException) -> StorageError:
        if exc.status == 404:
            return StorageError(
                f"cannot {verb} the checkpoint anchor: {self.description} does not exist "
                "(the chart creates it; create it empty and let the audit service fill it)"
            )
        if exc.status in (401, 403):
            return StorageError(
                f"cannot {verb} the checkpoint anchor {self.description}: the API server "
                f"said {exc.status} {exc.reason}; the audit service's ServiceAccount needs "
                "get and update on it"
            )
        return StorageError(
            f"cannot {verb} the checkpoint anchor {self.description}: {exc.status} {exc.reason}"
        )

    def load(self) -> AnchorRecord:
        """The note stored in the ConfigMap (``None`` if empty) and its resourceVersion."""
        try:
            cm: Any = self._core.read_namespaced_config_map(self.name, self.namespace)
        except ApiException as exc:
            raise self._fail("read", exc) from None
        self._last = cm
        data = cm.data or {}
        text = data.get(DATA_KEY)
        note = text.encode("utf-8") if text else None
        return AnchorRecord(note, str(cm.metadata.resource_version))

    def swap(self, expected: str, note: bytes) -> AnchorRecord:
        """Update the ConfigMap if its resourceVersion is still ``expected``."""
        try:
            text = note.decode("utf-8")
        except UnicodeDecodeError:
            raise StorageError("a checkpoint note must be UTF-8 text") from None
        cm = self._last
        if cm is None or str(cm.metadata.resource_version) != expected:
            try:
                cm = self._core.read_namespaced_config_map(self.name, self.namespace)
            except ApiException as exc:
                raise self._fail("read", exc) from None
        if str(cm.metadata.resource_version) != expected:
            raise self._conflict(expected)
        cm.data = {**(cm.data or {}), DATA_KEY: text}
        cm.metadata.resource_version = expected
        try:
            updated: Any = self._core.replace_namespaced_config_map(self.name, self.namespace, cm)
        except ApiException as exc:
            self._last = None
            if exc.status == 409:
                raise self._conflict(expected) from None
            raise self._fail("update", exc) from None
        self._last = updated
        return AnchorRecord(note, str(updated.metadata.resource_version))

    def _conflict(self, expected: str) -> AnchorConflictError:
        return AnchorConflictError(
            f"the checkpoint anchor {self.description} changed since resourceVersion "
            f"{expected}: another audit writer, or someone else, updated it"
        )
