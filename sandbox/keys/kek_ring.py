"""Where the ``local`` provider's key-encryption keys come from: the current one and the previous.

A :class:`KekRing` is the current KEK (every new or rewrapped data key is wrapped under
it) and the previous KEKs (still accepted for unwrapping while a rotation rewraps the
keys made under them). Two sources keep one:

- :class:`SecretKekRing` — Secrets in the operator's namespace, one immutable Secret per
  KEK *generation*: ``regsandbox-kek`` (generation 0, made on first start) and
  ``regsandbox-kek-g<N>``. The highest generation is current, the others are previous.
  Staging a new KEK is creating the next generation's Secret and dropping the previous
  ones is deleting theirs: every step is one atomic API call, so a ``kill -9`` at any
  point leaves a ring the next run continues from, and no KEK is ever rewritten in place.
- :class:`FileKekRing` — the file ``REGSANDBOX_LOCAL_KEK_FILE`` (current) and the file
  ``REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE`` (previous, optional; absent or empty means none),
  mounted from outside the cluster and changed by whoever manages that store.

The operator re-reads its source before it wraps a key, so a staged KEK is in use
without a restart (see :class:`~sandbox.keys.local.LocalKeyProvider`).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.keys.base import KeyProviderError
from sandbox.keys.local import generate_kek, kek_id, read_kek_file
from sandbox.kube.apply import create, delete, list_objects
from sandbox.provision.names import managed_labels

__all__ = [
    "GENERATION_ANNOTATION",
    "KEK_LABEL",
    "FileKekRing",
    "KekRing",
    "KekSource",
    "SecretKekRing",
]

KEK_LABEL = "regsandbox.io/key=kek"
"""Label selector of the KEK Secrets."""

GENERATION_ANNOTATION = "regsandbox.io/kek-generation"
"""Annotation numbering KEK Secrets; the legacy ``regsandbox-kek`` without it is 0."""

_FIRST = "regsandbox-kek"


@dataclass(frozen=True, slots=True)
class KekRing:
    """The current KEK and the previous ones. ``repr`` shows fingerprints only."""

    current: bytes
    """Wraps every new and rewrapped data key."""
    previous: tuple[bytes, ...] = ()
    """Still unwrap keys made under them, until a rotation has rewrapped those."""

    def __repr__(self) -> str:
        return (
            f"KekRing(current={kek_id(self.current)!r}, "
            f"previous={[kek_id(k) for k in self.previous]!r})"
        )

    @property
    def current_id(self) -> str:
        """Fingerprint of the current KEK."""
        return kek_id(self.current)

    @property
    def previous_ids(self) -> tuple[str, ...]:
        """Fingerprints of the previous KEKs."""
        return tuple(kek_id(k) for k in self.previous)


@runtime_checkable
class KekSource(Protocol):
    """Something the provider can (re)read its KEK ring from."""

    def load(self) -> KekRing:
        """The ring as it stands now."""
        ...


class FileKekRing:
    """The ring from a current-KEK file and an optional previous-KEK file."""

    def __init__(self, current: Path, previous: Path | None = None) -> None:
        self._current = current
        self._previous = previous

    def __repr__(self) -> str:
        return f"FileKekRing(current={str(self._current)!r}, previous={self._previous!r})"

    def load(self) -> KekRing:
        """Read both files; a missing or empty previous file means no previous KEK."""
        current = read_kek_file(self._current)
        previous: tuple[bytes, ...] = ()
        if self._previous is not None:
            try:
                empty = not self._previous.read_bytes().strip()
            except FileNotFoundError:
                empty = True
            except OSError as exc:
                raise KeyProviderError(
                    f"cannot read the previous local KEK file {self._previous}: "
                    f"{exc.strerror or exc}"
                ) from None
            if not empty:
                previous = (read_kek_file(self._previous),)
        return KekRing(current, tuple(k for k in previous if k != current))


def _generation(secret: dict[str, Any]) -> int:
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(GENERATION_ANNOTATION)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        name = secret["metadata"]["name"]
        raise KeyProviderError(
            f"KEK Secret {name} has a bad {GENERATION_ANNOTATION} annotation; fix or remove it"
        ) from None


def _value(secret: dict[str, Any]) -> bytes:
    name = secret["metadata"]["name"]
    data = ((secret.get("data") or {}).get("value")) or ""
    kek = base64.b64decode(data)
    if len(kek) != 32:
        raise KeyProviderError(f"KEK Secret {name} does not hold a 32-byte key")
    return kek


class SecretKekRing:
    """The ring kept as one immutable Secret per KEK generation (see the module docstring)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._api = api
        self._namespace = namespace

    def __repr__(self) -> str:
        return f"SecretKekRing(namespace={self._namespace!r})"

    def _secrets(self) -> list[dict[str, Any]]:
        found = [
            s
            for s in list_objects(self._api, "Secret", self._namespace, KEK_LABEL)
            if not (s.get("metadata") or {}).get("deletionTimestamp")
        ]
        return sorted(found, key=lambda s: (_generation(s), s["metadata"]["name"]))

    def load(self) -> KekRing:
        """The ring; the first generation is made (once, race-safe) when there is none."""
        secrets = self._secrets()
        if not secrets:
            self._make(_FIRST, 0)
            secrets = self._secrets()
        if not secrets:
            raise KeyProviderError(f"no KEK Secret in {self._namespace} right after making one")
        keks = [_value(s) for s in secrets]
        current = keks[-1]
        return KekRing(current, tuple(k for k in keks[:-1] if k != current))

    def stage(self, after: str) -> KekRing:
        """Make the KEK that follows the one with fingerprint ``after`` (the current one
        when the caller looked): the next generation. It becomes current, the others
        previous.

        Calls racing from the same ring agree on one new KEK: the Secret's name is the
        generation, so the second create is refused (409) and its caller uses the first.
        """
        generation = self._generation_of(after) + 1
        self._make(f"{_FIRST}-g{generation}", generation)
        return self.load()

    def drop_previous(self, verified: str) -> list[str]:
        """Delete the Secrets of the KEKs older than ``verified``; return their fingerprints.

        ``verified`` is the KEK every stored key was found under: KEKs staged after that
        check are newer and kept, so a concurrent rotation never loses its old KEK.
        """
        limit = self._generation_of(verified)
        dropped: list[str] = []
        for secret in self._secrets():
            if _generation(secret) < limit:
                # Background: the Secret is gone when this returns (nothing depends on it).
                delete(
                    self._api,
                    "Secret",
                    secret["metadata"]["name"],
                    self._namespace,
                    propagation="Background",
                )
                dropped.append(kek_id(_value(secret)))
        return dropped

    def _generation_of(self, fingerprint: str) -> int:
        for secret in self._secrets():
            if kek_id(_value(secret)) == fingerprint:
                return _generation(secret)
        raise KeyProviderError(
            f"no KEK Secret in {self._namespace} holds {fingerprint}; it was dropped meanwhile "
            "(another rotation?) — run the command again"
        )

    def _make(self, name: str, generation: int) -> None:
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": self._namespace,
            "labels": managed_labels(key="kek"),
        }
        if generation:
            metadata["annotations"] = {GENERATION_ANNOTATION: str(generation)}
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
            "immutable": True,
            "data": {"value": base64.b64encode(generate_kek()).decode("ascii")},
        }
        try:
            create(self._api, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
