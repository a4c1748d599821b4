"""The ``local`` key provider: per-sandbox data keys wrapped under an operator-held KEK.

Each sandbox gets a 32-byte random data key. It is stored only wrapped: AES-256-GCM under
the key-encryption key (KEK) with a fresh 96-bit nonce, and with the sandbox id and key id
as associated data, so a wrapped key copied to another sandbox's slot fails to unwrap.

Destroying a key deletes its wrapped form (crypto-shredding: without it the data key
cannot be recovered) and overwrites this process's cached copy. Python cannot promise
that no other copy of a ``bytes`` object survives in memory; the guarantee rests on the
wrapped key being gone.

Wrapped keys live behind :class:`WrappedKeyStore`, a byte-oriented interface so the
operator can back it with Kubernetes Secrets; :class:`MemoryWrappedKeyStore` and
:class:`FileWrappedKeyStore` are here for tests and single-node use.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandbox.keys.base import (
    KeyDestruction,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProviderError,
    KeyRef,
    KeyStateError,
    crash_point,
    validate_sandbox_id,
)

if TYPE_CHECKING:
    from sandbox.keys.kek_ring import KekSource

__all__ = [
    "DATA_KEY_BYTES",
    "KEK_BYTES",
    "PROVIDER_NAME",
    "FileWrappedKeyStore",
    "KekRotation",
    "LocalKeyProvider",
    "MemoryWrappedKeyStore",
    "RewrappedKey",
    "WrappedKeyStore",
    "generate_kek",
    "kek_id",
    "read_kek_file",
]

PROVIDER_NAME = "local"
"""The name this provider is configured by."""

KEK_BYTES = 32
"""Length of the key-encryption key (AES-256)."""

DATA_KEY_BYTES = 32
"""Length of each per-sandbox data key."""

_NONCE_BYTES = 12
_RECORD_VERSION = 1
_AAD_LABEL = "regsandbox.io/local-key/v1"

_log = structlog.get_logger("sandbox.keys.local")


def generate_kek() -> bytes:
    """A fresh random key-encryption key, for the operator to keep in its Secret."""
    return secrets.token_bytes(KEK_BYTES)


def read_kek_file(path: Path) -> bytes:
    """The KEK from a file the operator mounts from outside the cluster it protects.

    The file holds the 32-byte key base64-encoded (``head -c 32 /dev/urandom | base64``),
    surrounding whitespace allowed. Errors name the file and what is wrong, never the
    content.
    """
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise KeyProviderError(
            f"cannot read the local KEK file {path}: {exc.strerror or exc}"
        ) from None
    try:
        kek = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyProviderError(
            f"the local KEK file {path} is not base64 (expected {KEK_BYTES} random bytes, "
            "base64-encoded)"
        ) from None
    if len(kek) != KEK_BYTES:
        raise KeyProviderError(
            f"the local KEK file {path} holds {len(kek)} bytes; the KEK must be exactly "
            f"{KEK_BYTES} bytes (base64-encoded)"
        )
    return kek


def kek_id(kek: bytes) -> str:
    """A short, public fingerprint of a KEK, recorded beside each wrapped key.

    It tells which KEK wrapped a key (for rotation and for a clear "wrong KEK" error);
    a truncated SHA-256 of a 256-bit random key reveals nothing usable about it.
    """
    _check_kek(kek)
    digest = hashlib.sha256(b"regsandbox.io/kek-id\x00" + kek).hexdigest()
    return f"kek-{digest[:16]}"


def _check_kek(kek: bytes) -> None:
    if not isinstance(kek, bytes | bytearray) or len(kek) != KEK_BYTES:
        raise KeyProviderError(f"the local KEK must be exactly {KEK_BYTES} bytes")


@runtime_checkable
class WrappedKeyStore(Protocol):
    """Where wrapped keys are kept, one opaque byte string per sandbox id.

    ``put`` without ``replace`` is create-if-absent and returns whatever is stored
    afterwards, so two racing creators agree on one key. A Kubernetes-Secret store maps
    it to create (409 → read the existing Secret); ``replace=True`` to an update.
    """

    def get(self, sandbox_id: str, *, fresh: bool = False) -> bytes | None:
        """The stored bytes, or ``None``; ``fresh`` bypasses any cache."""
        ...

    def put(self, sandbox_id: str, blob: bytes, *, replace: bool = False) -> bytes:
        """Store ``blob`` (only if absent unless ``replace``); return what is stored now."""
        ...

    def delete(self, sandbox_id: str) -> bool:
        """Remove the entry; ``True`` if there was one."""
        ...

    def ids(self) -> list[str]:
        """Every sandbox id with an entry (used by KEK rotation)."""
        ...

    def swap(self, sandbox_id: str, expected: bytes, blob: bytes) -> bool:
        """Replace the entry with ``blob`` only if it still holds ``expected``.

        ``False`` (nothing written) when the entry changed or is gone: a key destroyed
        while it was being rewrapped is never brought back.
        """
        ...

    def confirm_absent(self, sandbox_id: str) -> str:
        """Read the entry back from the backing store itself, bypassing any cache.

        Returns what was checked (for the destruction audit entry) when nothing is
        there; raises :class:`KeyProviderError` when the entry can still be read.
        """
        ...


class MemoryWrappedKeyStore:
    """A :class:`WrappedKeyStore` in a dict, for tests and ephemeral use."""

    def __init__(self) -> None:
        self._items: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryWrappedKeyStore(entries={len(self._items)})"

    def get(self, sandbox_id: str, *, fresh: bool = False) -> bytes | None:
        """The stored bytes, or ``None`` (there is no cache to bypass)."""
        del fresh
        with self._lock:
            return self._items.get(sandbox_id)

    def put(self, sandbox_id: str, blob: bytes, *, replace: bool = False) -> bytes:
        """Store ``blob`` (only if absent unless ``replace``); return what is stored now."""
        with self._lock:
            if replace or sandbox_id not in self._items:
                self._items[sandbox_id] = bytes(blob)
            return self._items[sandbox_id]

    def delete(self, sandbox_id: str) -> bool:
        """Remove the entry; ``True`` if there was one."""
        with self._lock:
            return self._items.pop(sandbox_id, None) is not None

    def ids(self) -> list[str]:
        """Every sandbox id with an entry."""
        with self._lock:
            return sorted(self._items)

    def swap(self, sandbox_id: str, expected: bytes, blob: bytes) -> bool:
        """Replace the entry with ``blob`` only if it still holds ``expected``."""
        with self._lock:
            if self._items.get(sandbox_id) != expected:
                return False
            self._items[sandbox_id] = bytes(blob)
            return True

    def confirm_absent(self, sandbox_id: str) -> str:
        """Check the dict has no entry for ``sandbox_id``; say so."""
        with self._lock:
            present = sandbox_id in self._items
        if present:
            raise KeyProviderError(f"the in-memory wrapped key of {sandbox_id!r} is still there")
        return f"read-back of the in-memory entry for {sandbox_id!r} found nothing"


class FileWrappedKeyStore:
    """A :class:`WrappedKeyStore` with one ``<sandbox-id>.key`` file (mode 0600) per sandbox.

    Writes go to a temporary file that is fsynced and renamed into place, so a crash
    leaves either the old entry or the new one, never half of one.
    """

    _SUFFIX = ".key"

    def __init__(self, directory: Path) -> None:
        self._directory = Path(directory)
        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"FileWrappedKeyStore(directory={str(self._directory)!r})"

    def _path(self, sandbox_id: str) -> Path:
        return self._directory / f"{validate_sandbox_id(sandbox_id)}{self._SUFFIX}"

    def get(self, sandbox_id: str, *, fresh: bool = False) -> bytes | None:
        """The stored bytes, or ``None`` (read from disk every time)."""
        del fresh
        try:
            return self._path(sandbox_id).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, sandbox_id: str, blob: bytes, *, replace: bool = False) -> bytes:
        """Store ``blob`` (only if absent unless ``replace``); return what is stored now."""
        path = self._path(sandbox_id)
        with self._lock:
            if not replace:
                existing = self.get(sandbox_id)
                if existing is not None:
                    return existing
            descriptor, temporary = tempfile.mkstemp(dir=self._directory, prefix=".tmp-")
            try:
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(blob)
                    handle.flush()
                    os.fsync(handle.fileno())
                if replace:
                    Path(temporary).replace(path)
                else:
                    # link() fails if the name exists: create-if-absent across processes.
                    with contextlib.suppress(FileExistsError):
                        os.link(temporary, path)
                    Path(temporary).unlink()
                self._sync_directory()
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    Path(temporary).unlink()
                raise
            stored = self.get(sandbox_id)
            if stored is None:  # pragma: no cover - removed by someone else meanwhile
                raise KeyProviderError(f"wrapped key for sandbox {sandbox_id!r} vanished")
            return stored

    def delete(self, sandbox_id: str) -> bool:
        """Remove the entry; ``True`` if there was one."""
        try:
            self._path(sandbox_id).unlink()
        except FileNotFoundError:
            return False
        self._sync_directory()
        return True

    def ids(self) -> list[str]:
        """Every sandbox id with an entry."""
        return sorted(
            path.name.removesuffix(self._SUFFIX)
            for path in self._directory.iterdir()
            if path.name.endswith(self._SUFFIX) and not path.name.startswith(".")
        )

    def swap(self, sandbox_id: str, expected: bytes, blob: bytes) -> bool:
        """Replace the file with ``blob`` only if it still holds ``expected`` (this process
        serialises swaps with its lock; across processes use one writer)."""
        with self._lock:  # re-entrant: put takes it too
            if self.get(sandbox_id) != expected:
                return False
            self.put(sandbox_id, blob, replace=True)
            return True

    def confirm_absent(self, sandbox_id: str) -> str:
        """``stat`` the entry's file after the unlink; it must not exist."""
        path = self._path(sandbox_id)
        if path.exists():
            raise KeyProviderError(f"the wrapped-key file {str(path)!r} still exists")
        return f"stat({str(path)!r}) after unlink and directory fsync: no such file"

    def _sync_directory(self) -> None:
        descriptor = os.open(self._directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


@dataclass(frozen=True, slots=True)
class _Record:
    """One wrapped data key with the metadata needed to show and unwrap it."""

    sandbox_id: str
    key_id: str
    region: str
    created_at: dt.datetime
    kek_id: str
    nonce: bytes
    wrapped: bytes
    tags: dict[str, str]

    def __repr__(self) -> str:
        return f"_Record(sandbox_id={self.sandbox_id!r}, key_id={self.key_id!r})"

    def to_bytes(self) -> bytes:
        document = {
            "v": _RECORD_VERSION,
            "sandboxId": self.sandbox_id,
            "keyId": self.key_id,
            "region": self.region,
            "createdAt": self.created_at.isoformat(),
            "kekId": self.kek_id,
            "nonce": base64.b64encode(self.nonce).decode("ascii"),
            "wrapped": base64.b64encode(self.wrapped).decode("ascii"),
            "tags": self.tags,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, sandbox_id: str, blob: bytes) -> _Record:
        try:
            document: dict[str, Any] = json.loads(blob)
            if document.get("v") != _RECORD_VERSION:
                raise ValueError(f"unsupported record version {document.get('v')!r}")
            return cls(
                sandbox_id=str(document["sandboxId"]),
                key_id=str(document["keyId"]),
                region=str(document["region"]),
                created_at=dt.datetime.fromisoformat(document["createdAt"]),
                kek_id=str(document["kekId"]),
                nonce=base64.b64decode(document["nonce"], validate=True),
                wrapped=base64.b64decode(document["wrapped"], validate=True),
                tags={str(k): str(v) for k, v in document.get("tags", {}).items()},
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as error:
            # The reason is about structure only; it never quotes the stored bytes.
            raise KeyIntegrityError(
                f"stored key for sandbox {sandbox_id!r} is unreadable "
                f"({type(error).__name__}); restore it from backup or destroy the sandbox"
            ) from None

    def ref(self) -> KeyRef:
        return KeyRef(
            sandbox_id=self.sandbox_id,
            key_id=self.key_id,
            provider=PROVIDER_NAME,
            region=self.region,
            created_at=self.created_at,
        )


def _aad(sandbox_id: str, key_id: str) -> bytes:
    """Associated data binding a wrapped key to its sandbox and key id (unambiguous JSON)."""
    return json.dumps([_AAD_LABEL, sandbox_id, key_id], separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class RewrappedKey:
    """One data key a KEK rotation rewrapped (identifiers only, for the audit entry)."""

    sandbox_id: str
    """The sandbox the key belongs to."""
    key_id: str
    """The data key's id (unchanged by a KEK rotation)."""
    old_kek_id: str
    """The KEK it was wrapped under before (``local``: a fingerprint; ``pkcs11``: the
    token object)."""
    new_kek_id: str
    """The KEK it is wrapped under now."""


@dataclass(frozen=True, slots=True)
class KekRotation:
    """What :meth:`LocalKeyProvider.rotate_kek` or :meth:`~LocalKeyProvider.rewrap_all` did."""

    old_kek_id: str
    """Fingerprint of the KEK in use before the rotation (for :meth:`rewrap_all`, the
    previous KEKs' fingerprints joined by commas, or the current one when there is none)."""
    new_kek_id: str
    """Fingerprint of the KEK every key is now wrapped under."""
    rewrapped: int
    """Keys rewrapped by this call."""
    already_current: int
    """Keys already under the new KEK (an earlier, interrupted rotation)."""
    failed: tuple[str, ...] = ()
    """Sandboxes whose stored key could not be read or unwrapped (left as they were);
    while any is listed, keep the old KEK."""
    keys: tuple[RewrappedKey, ...] = ()
    """The keys this call rewrapped."""


class LocalKeyProvider:
    """The ``local`` :class:`~sandbox.keys.base.KeyProvider`.

    ``kek`` is the current key-encryption key; ``previous_keks`` are older KEKs still
    accepted for unwrapping, so an interrupted :meth:`rotate_kek` can be resumed after a
    restart by passing the new KEK as ``kek`` and the old one in ``previous_keks``.

    Calls for one sandbox are serialised by one of ``lock_stripes`` locks (chosen by the
    sandbox id), held across the store's reads and writes, so that a sandbox never gets
    two keys; calls for other sandboxes proceed in parallel, which matters when the
    store is a Secret and each call is an API round trip. :meth:`rotate_kek` takes
    every stripe.
    """

    def __init__(
        self,
        kek: bytes,
        store: WrappedKeyStore,
        *,
        previous_keks: Iterable[bytes] = (),
        lock_stripes: int = 64,
        source: KekSource | None = None,
    ) -> None:
        _check_kek(kek)
        if lock_stripes < 1:
            raise ValueError("lock_stripes must be at least 1")
        self._kek = bytes(kek)
        self._keks: dict[str, bytes] = {}
        for old in previous_keks:
            _check_kek(old)
            self._keks[kek_id(old)] = bytes(old)
        self._keks[kek_id(kek)] = self._kek
        self._store = store
        self._source = source
        self._cache: dict[str, tuple[str, bytearray]] = {}
        self._stripes = tuple(threading.Lock() for _ in range(lock_stripes))
        self._ring_lock = threading.Lock()
        self._ring_started = 0
        """Reads of the source begun so far (each numbered by this count when begun)."""
        self._ring_read = 0
        """The number of the last read of the source that completed."""

    @classmethod
    def from_source(
        cls, source: KekSource, store: WrappedKeyStore, *, lock_stripes: int = 64
    ) -> LocalKeyProvider:
        """A provider whose KEKs come from ``source`` (a Secret ring or files).

        The source is read again before every new key is wrapped, and when a stored key
        names a KEK this process does not hold: a KEK staged for rotation is used at once,
        and a dropped one is forgotten, without restarting the operator.
        """
        ring = source.load()
        return cls(
            ring.current,
            store,
            previous_keks=ring.previous,
            lock_stripes=lock_stripes,
            source=source,
        )

    def refresh(self) -> None:
        """Re-read the KEK ring from the source (no-op without one).

        When this returns, the ring in use is one read that *began after* this call
        did; that is all a caller relies on (see :meth:`_follow_rotation`). Calls made
        while a read is under way therefore wait for the next read and share it: in a
        burst of new sandboxes the source (a LIST of Secrets) is read a few times per
        round trip instead of twice per key.
        """
        if self._source is None:
            return
        ticket = self._ring_started  # reads numbered above this begin after this call
        with self._ring_lock:
            if self._ring_read > ticket:
                return  # a read that began after this call has completed
            self._ring_started += 1
            number = self._ring_started
            ring = self._source.load()
            keks = {kek_id(old): bytes(old) for old in ring.previous}
            keks[kek_id(ring.current)] = bytes(ring.current)
            self._keks = keks  # readers see the old or the new ring, never half of one
            self._kek = keks[kek_id(ring.current)]
            self._ring_read = number

    @property
    def kek_ids(self) -> tuple[str, ...]:
        """Fingerprints of every KEK this provider can unwrap with, current last."""
        current = self.kek_id
        return (*sorted(k for k in self._keks if k != current), current)

    def __repr__(self) -> str:
        return f"LocalKeyProvider(kek_id={self.kek_id!r}, store={self._store!r})"

    @property
    def name(self) -> str:
        """``local``."""
        return PROVIDER_NAME

    @property
    def kek_id(self) -> str:
        """Fingerprint of the current KEK (safe to show)."""
        return kek_id(self._kek)

    def create(self, sandbox_id: str, region: str, tags: dict[str, str]) -> KeyRef:
        """Make the sandbox's data key, or return the existing one.

        Raises :class:`KeyStateError` when a key exists for the sandbox in another region.
        """
        validate_sandbox_id(sandbox_id)
        if not region:
            raise KeyProviderError(f"a region is needed to create the key of {sandbox_id!r}")
        with self._lock(sandbox_id):
            existing = self._load(sandbox_id)
            if existing is None:
                self.refresh()  # wrap under the KEK current now, even one staged a moment ago
                key_id = f"local-{secrets.token_hex(16)}"
                data_key = bytearray(secrets.token_bytes(DATA_KEY_BYTES))
                candidate = self._wrap(
                    sandbox_id=sandbox_id,
                    key_id=key_id,
                    region=region,
                    created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
                    tags=dict(tags),
                    data_key=bytes(data_key),
                )
                stored = _Record.from_bytes(
                    sandbox_id, self._store.put(sandbox_id, candidate.to_bytes())
                )
                if stored.key_id == key_id:
                    self._cache[sandbox_id] = (key_id, data_key)
                    _log.info(
                        "key.created", sandbox=sandbox_id, key_id=key_id, provider=PROVIDER_NAME
                    )
                    self._follow_rotation(sandbox_id, stored)
                else:  # another creator won the race; ours was never stored
                    _zero(data_key)
                existing = stored
            if existing.region != region:
                raise KeyStateError(
                    f"sandbox {sandbox_id!r} already has key {existing.key_id} in region "
                    f"{existing.region!r}, not {region!r}; destroy it before moving the sandbox"
                )
            return existing.ref()

    def get(self, sandbox_id: str) -> KeyRef | None:
        """The sandbox's key, or ``None`` when it has none (or it was destroyed)."""
        record = self._load(validate_sandbox_id(sandbox_id))
        return None if record is None else record.ref()

    def data_key(self, sandbox_id: str) -> bytes:
        """The plaintext data key, for the storage profile's Secret. Never log it.

        Raises :class:`KeyNotFoundError` if the sandbox has no key (or it was destroyed)
        and :class:`KeyIntegrityError` if the wrapped key does not authenticate.
        """
        validate_sandbox_id(sandbox_id)
        with self._lock(sandbox_id):
            record = self._load(sandbox_id)
            if record is None:
                self._forget(sandbox_id)
                raise KeyNotFoundError(
                    f"sandbox {sandbox_id!r} has no local key (never created, or destroyed)"
                )
            cached = self._cache.get(sandbox_id)
            if cached is not None and cached[0] == record.key_id:
                return bytes(cached[1])
            self._forget(sandbox_id)
            if record.kek_id not in self._keks:
                # Rewrapped by a rotation in another process since it was cached, or
                # under a KEK staged since this process last looked: read both again.
                self.refresh()
                record = self._load(sandbox_id, fresh=True) or record
            plaintext = self._unwrap(record)
            self._cache[sandbox_id] = (record.key_id, bytearray(plaintext))
            return plaintext

    def destroy(self, sandbox_id: str) -> KeyDestruction:
        """Delete the wrapped key and overwrite the cached plaintext (crypto-shredding)."""
        validate_sandbox_id(sandbox_id)
        with self._lock(sandbox_id):
            record = self._load_quietly(sandbox_id)
            existed = self._store.delete(sandbox_id)
            self._forget(sandbox_id)
            # Evidence, not assumption: the store itself is asked again (no cache); a
            # wrapped key still readable raises, and the sandbox's teardown retries.
            checked = self._store.confirm_absent(sandbox_id)
        key_id = record.key_id if record is not None else None
        confirmation = f"wrapped key {key_id} deleted; {checked}" if existed and key_id else checked
        if not existed:
            return KeyDestruction(
                sandbox_id=sandbox_id,
                provider=PROVIDER_NAME,
                outcome="absent",
                confirmation=confirmation,
            )
        _log.info("key.destroyed", sandbox=sandbox_id, key_id=key_id, provider=PROVIDER_NAME)
        return KeyDestruction(
            sandbox_id=sandbox_id,
            provider=PROVIDER_NAME,
            outcome="destroyed",
            key_id=key_id,
            confirmation=confirmation,
        )

    def rotate_kek(self, new_kek: bytes) -> KekRotation:
        """Rewrap every data key under ``new_kek`` and make it the current KEK.

        For a provider without a KEK source (tests, single-process use). With a source,
        stage the new KEK there (``sandbox-operator keys rotate-kek`` does) and call
        :meth:`rewrap_all`.

        No downtime: ``new_kek`` becomes current first (new keys are wrapped under it),
        then each sandbox's key is rewrapped holding only that sandbox's lock, so creates,
        reads and destroys of other sandboxes go on meanwhile. Each rewrap is a
        compare-and-swap on the store: a key destroyed meanwhile stays destroyed. The
        data keys themselves do not change, so volumes are unaffected.

        Resumable: keys already under ``new_kek`` are skipped. A stored key that cannot be
        read or unwrapped is left as it is and listed in ``failed``. Keep the old KEK (as
        a ``previous_keks`` entry) until this returns with nothing failed; then it can be
        discarded.
        """
        _check_kek(new_kek)
        new_id = kek_id(new_kek)
        old_id = self.kek_id
        self._keks[new_id] = bytes(new_kek)
        self._kek = self._keks[new_id]
        return self._rewrap_every(old_id)

    def rewrap_all(self, on_rewrapped: Callable[[RewrappedKey], None] | None = None) -> KekRotation:
        """Rewrap every stored key that is not under the current KEK (re-read from the
        source first); the rotation step after a new KEK was staged.

        Each rewrap is a compare-and-swap, so this runs beside a live operator (in its
        process or another): keys the operator makes meanwhile are wrapped under the
        current KEK already, and a key destroyed meanwhile stays destroyed. Killed at any
        point, run it again. When it returns with nothing ``failed`` and a listing shows
        no key under a previous KEK, the previous KEKs may be dropped. ``on_rewrapped`` is
        called after each rewrap (the audit entry); if it raises, the rotation stops.
        """
        self.refresh()
        previous = [k for k in self.kek_ids if k != self.kek_id]
        return self._rewrap_every(",".join(previous) or self.kek_id, on_rewrapped)

    def _rewrap_every(
        self, old_label: str, on_rewrapped: Callable[[RewrappedKey], None] | None = None
    ) -> KekRotation:
        new_id = self.kek_id
        # Barrier: a create that read the old KEK holds its stripe until its key is
        # stored, so once every stripe has been free once, the listing below sees it.
        for stripe in self._stripes:
            with stripe:
                pass
        already = 0
        done: list[RewrappedKey] = []
        failed: list[str] = []
        for sandbox_id in self._store.ids():
            try:
                with self._lock(sandbox_id):
                    outcome = self._rewrap(sandbox_id, new_id)
            except KeyIntegrityError:
                # One bad record must not keep every other key under the old KEK.
                _log.warning("kek.rotation_skipped", sandbox=sandbox_id, kek_id=new_id)
                failed.append(sandbox_id)
                continue
            if isinstance(outcome, RewrappedKey):
                done.append(outcome)
                if on_rewrapped is not None:
                    on_rewrapped(outcome)
                crash_point("kek-after-rewrap")
            already += outcome == "current"
        _log.info(
            "kek.rotated",
            old_kek_id=old_label,
            new_kek_id=new_id,
            rewrapped=len(done),
            failed=len(failed),
        )
        return KekRotation(
            old_kek_id=old_label,
            new_kek_id=new_id,
            rewrapped=len(done),
            already_current=already,
            failed=tuple(failed),
            keys=tuple(done),
        )

    def under_previous(self) -> list[str]:
        """Sandboxes whose stored key (read from the store, uncached) is not under the
        current KEK; dropping the previous KEKs is safe only when this is empty."""
        self.refresh()
        left: list[str] = []
        for sandbox_id in self._store.ids():
            blob = self._store.get(sandbox_id, fresh=True)
            if blob is None:
                continue
            try:
                current = _Record.from_bytes(sandbox_id, blob).kek_id == self.kek_id
            except KeyIntegrityError:
                current = False
            if not current:
                left.append(sandbox_id)
        return left

    def _follow_rotation(self, sandbox_id: str, stored: _Record) -> None:
        """After storing a new key: if a KEK was staged meanwhile, rewrap it now.

        A rotation lists the stored keys after staging; a key wrapped under the old KEK
        but stored after that listing would otherwise stay under a KEK about to be
        dropped. Reading the ring again after the store closes that window.
        """
        if self._source is None:
            return
        self.refresh()
        if stored.kek_id != self.kek_id:
            self._rewrap(sandbox_id, self.kek_id)

    def _rewrap(self, sandbox_id: str, new_id: str) -> str | RewrappedKey:
        """Rewrap one stored key under KEK ``new_id``: the key, ``current`` or ``gone``."""
        blob = self._store.get(sandbox_id, fresh=True)
        if blob is None:
            return "gone"
        record = _Record.from_bytes(sandbox_id, blob)
        if record.kek_id == new_id:
            return "current"
        plaintext = self._unwrap(record)
        fresh = self._wrap(
            sandbox_id=record.sandbox_id,
            key_id=record.key_id,
            region=record.region,
            created_at=record.created_at,
            tags=record.tags,
            data_key=plaintext,
            kek=self._keks[new_id],
        )
        if self._store.swap(sandbox_id, blob, fresh.to_bytes()):
            return RewrappedKey(sandbox_id, record.key_id, record.kek_id, new_id)
        return "gone"  # destroyed (or rewritten) meanwhile: left as it now is

    def rotate_data_key(self, sandbox_id: str) -> KeyRef:
        """Give the sandbox a new data key (and key id), replacing and shredding the old one.

        The old wrapped key is replaced in the store and its cached plaintext overwritten.
        What this means for data already written is the storage profile's business: a
        volume encrypted with the old key cannot be opened with the new one, so existing
        volumes must be copied to volumes made with the new key before this is called
        (see docs/key-custody.md).
        """
        validate_sandbox_id(sandbox_id)
        with self._lock(sandbox_id):
            blob = self._store.get(sandbox_id)
            if blob is None:
                raise KeyNotFoundError(f"sandbox {sandbox_id!r} has no local key to rotate")
            record = _Record.from_bytes(sandbox_id, blob)
            self.refresh()
            key_id = f"local-{secrets.token_hex(16)}"
            fresh = self._wrap(
                sandbox_id=sandbox_id,
                key_id=key_id,
                region=record.region,
                created_at=dt.datetime.now(dt.UTC).replace(microsecond=0),
                tags=record.tags,
                data_key=secrets.token_bytes(DATA_KEY_BYTES),
            )
            if not self._store.swap(sandbox_id, blob, fresh.to_bytes()):
                raise KeyStateError(
                    f"the key of sandbox {sandbox_id!r} changed or was destroyed while it "
                    "was being rotated; look at the sandbox and retry"
                )
            self._forget(sandbox_id)
            self._follow_rotation(sandbox_id, fresh)
        _log.info(
            "key.rotated",
            sandbox=sandbox_id,
            old_key_id=record.key_id,
            key_id=key_id,
            provider=PROVIDER_NAME,
        )
        return fresh.ref()

    def _wrap(
        self,
        *,
        sandbox_id: str,
        key_id: str,
        region: str,
        created_at: dt.datetime,
        tags: dict[str, str],
        data_key: bytes,
        kek: bytes | None = None,
    ) -> _Record:
        kek = self._kek if kek is None else kek
        nonce = secrets.token_bytes(_NONCE_BYTES)
        wrapped = AESGCM(kek).encrypt(nonce, data_key, _aad(sandbox_id, key_id))
        return _Record(
            sandbox_id=sandbox_id,
            key_id=key_id,
            region=region,
            created_at=created_at,
            kek_id=kek_id(kek),
            nonce=nonce,
            wrapped=wrapped,
            tags=tags,
        )

    def _unwrap(self, record: _Record) -> bytes:
        kek = self._keks.get(record.kek_id)
        if kek is None:
            raise KeyIntegrityError(
                f"key {record.key_id} of sandbox {record.sandbox_id!r} is wrapped under "
                f"{record.kek_id}, but this operator holds {self.kek_id}; configure the KEK "
                "it was wrapped with (as the current or a previous KEK)"
            )
        try:
            plaintext = AESGCM(kek).decrypt(
                record.nonce, record.wrapped, _aad(record.sandbox_id, record.key_id)
            )
        except InvalidTag:
            raise KeyIntegrityError(
                f"key {record.key_id} of sandbox {record.sandbox_id!r} failed authentication "
                f"under {record.kek_id}: the stored key was altered or moved from another "
                "sandbox; do not use it"
            ) from None
        if len(plaintext) != DATA_KEY_BYTES:  # pragma: no cover - AEAD makes this unreachable
            raise KeyIntegrityError(f"key {record.key_id} has the wrong length")
        return plaintext

    def _lock(self, sandbox_id: str) -> threading.Lock:
        """The stripe serialising calls for ``sandbox_id``."""
        return self._stripes[zlib.crc32(sandbox_id.encode()) % len(self._stripes)]

    def _load(self, sandbox_id: str, *, fresh: bool = False) -> _Record | None:
        blob = self._store.get(sandbox_id, fresh=True) if fresh else self._store.get(sandbox_id)
        if blob is None:
            return None
        record = _Record.from_bytes(sandbox_id, blob)
        if record.sandbox_id != sandbox_id:
            raise KeyIntegrityError(
                f"the key stored for sandbox {sandbox_id!r} belongs to sandbox "
                f"{record.sandbox_id!r}; it was moved and must not be used"
            )
        return record

    def _load_quietly(self, sandbox_id: str) -> _Record | None:
        """Like :meth:`_load`, but an unreadable record does not stop its destruction."""
        try:
            return self._load(sandbox_id)
        except KeyIntegrityError:
            return None

    def _forget(self, sandbox_id: str) -> None:
        cached = self._cache.pop(sandbox_id, None)
        if cached is not None:
            _zero(cached[1])


def _zero(buffer: bytearray) -> None:
    """Overwrite a cached key in place."""
    for index in range(len(buffer)):
        buffer[index] = 0
