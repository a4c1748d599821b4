"""Reading a remote audit log and checking what it says, as a compliance officer does.

:class:`RemoteLog` reads from ``sandboxctl audit serve`` in one of two scopes: the whole
log, or one tenant's slice (``tenant=``). It trusts nothing the service says that it can
check itself:

- every checkpoint is opened with the caller's verifier keys (the published ``vkey``),
  never with a key the service hands out;
- the whole log is re-hashed entry by entry and must give the checkpoint's root;
- a tenant's entries each come with an inclusion proof, checked against the checkpoint
  of their page; if the log grows while pages are read, each newer checkpoint must be
  consistent with the first one;
- :meth:`RemoteLog.check_extends` proves the current checkpoint extends one the caller
  saved earlier (a rollback or a fork fails).

Failures raise :class:`~audit.errors.VerificationError`; a service that cannot be read
raises :class:`~audit.client.AuditUnavailable` (or ``AuditRejected`` for 401/403).
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.client import AuditRejected, AuditUnavailable
from audit.errors import MalformedError, StorageError, VerificationError
from audit.log import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENTRIES_FILE,
    HASHES_FILE,
    OFFSETS_FILE,
    VKEY_FILE,
    config_bytes,
)
from audit.merkle import CompactRange, leaf_hash, verify_consistency, verify_inclusion
from audit.note import Verifier, b64decode
from audit.proof import TlogProof, verify_tlog_proof
from audit.signing import write_vkey_file
from audit.wal import MAGIC, encode_record

__all__ = ["PAGE", "RATE_WAIT", "RemoteLog"]

PAGE = 1_000
"""Entries asked for per request."""


class RemoteLog:
    """A remote audit log, read in the whole-log scope or one tenant's (``tenant``)."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        verifiers: Iterable[Verifier],
        *,
        tenant: str | None = None,
        timeout: float = 30.0,
        verify_tls: str | bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.verifiers = tuple(verifiers)
        """Keys checkpoints must verify with."""
        if not self.verifiers:
            raise ValueError("a remote log is read with at least one trusted verifier key")
        self.tenant = tenant
        """The tenant whose slice is read, or None for the whole log."""
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=timeout,
            verify=verify_tls,
            transport=transport,
            follow_redirects=False,
        )
        self._prefix = "/v1" if tenant is None else f"/v1/tenants/{tenant}"

    def __repr__(self) -> str:
        return f"RemoteLog({str(self._http.base_url)!r}, tenant={self.tenant!r})"  # no token

    def _get(self, path: str, *, scoped: bool = True, **params: Any) -> httpx.Response:
        """GET ``path``; a 429 (past this reader's rate on the read server) is waited out
        as its ``Retry-After`` says, for at most :data:`RATE_WAIT` seconds in all."""
        url = (self._prefix if scoped else "/v1") + path
        waited = 0.0
        while True:
            try:
                response = self._http.get(url, params=params)
            except httpx.HTTPError as exc:
                raise AuditUnavailable(
                    f"audit service at {self._http.base_url} unreachable: {type(exc).__name__}"
                ) from exc
            pause = _retry_after(response)
            if pause is None or waited + pause > RATE_WAIT:
                break
            time.sleep(pause)
            waited += pause
        if response.status_code != 200:
            detail = response.text[:300].strip()
            error = AuditRejected if 400 <= response.status_code < 500 else AuditUnavailable
            raise error(f"audit service answered GET {url} with {response.status_code}: {detail}")
        return response

    def _open(self, note: bytes) -> Checkpoint:
        return open_checkpoint(note, self.verifiers)

    def checkpoint(self) -> tuple[bytes, Checkpoint]:
        """The current checkpoint note, verified with the trusted keys, and its content."""
        note = self._get("/checkpoint").content
        return note, self._open(note)

    def consistency(self, old: Checkpoint, new: Checkpoint) -> list[bytes]:
        """Fetch and check a consistency proof from ``old`` to ``new``."""
        if old.origin != new.origin:
            raise VerificationError(f"checkpoints of two logs: {old.origin!r}, {new.origin!r}")
        if old.size > new.size:
            raise VerificationError(
                f"the log shrank: {old.size} entries before, {new.size} now (rollback)"
            )
        if old.size == 0:
            return []
        proof: list[bytes] = []
        if old.size < new.size:
            body = self._get("/proof/consistency", old=old.size, new=new.size).json()
            proof = _hashes(body)
        verify_consistency(old.size, new.size, proof, old.root, new.root)
        return proof

    def check_extends(self, saved: bytes, current: Checkpoint) -> Checkpoint:
        """Check that ``current`` extends the checkpoint note ``saved``; return the latter."""
        old = self._open(saved)
        self.consistency(old, current)
        return old

    def entries(self) -> Iterator[tuple[int, bytes]]:
        """Every readable entry, ``(index, exact bytes)``, each checked as it arrives.

        Whole log: entries up to the checkpoint, and at the end the recomputed root
        must equal the checkpoint's. Tenant: each entry's inclusion proof.
        """
        if self.tenant is None:
            yield from self._whole(self.checkpoint()[1])
        else:
            yield from self._slice()

    def _whole(
        self, checkpoint: Checkpoint, store: Callable[[bytes], object] | None = None
    ) -> Iterator[tuple[int, bytes]]:
        tree = CompactRange()
        for start in range(0, checkpoint.size, PAGE):
            end = min(start + PAGE, checkpoint.size)
            lines = self._get("/entries", scoped=False, start=start, end=end).content.split(b"\n")
            if lines[-1] != b"" or len(lines) - 1 != end - start:
                raise AuditUnavailable(f"audit service returned a short range [{start}, {end})")
            for offset, data in enumerate(lines[:-1]):
                produced = tree.append(leaf_hash(data))
                if store is not None:
                    store(b"".join(produced))
                yield start + offset, data
        if tree.root() != checkpoint.root:
            raise VerificationError(
                f"the {checkpoint.size} entries served do not hash to the checkpoint's root"
            )

    def _slice(self) -> Iterator[tuple[int, bytes]]:
        first: Checkpoint | None = None
        start: int | None = 0
        last = -1
        while start is not None:
            page = self._get("/entries", start=start, limit=PAGE).json()
            try:
                checkpoint = self._open(str(page["checkpoint"]).encode())
                items = list(page["entries"])
                after = page["next"]
            except (KeyError, TypeError) as exc:
                raise AuditUnavailable(f"audit service gave a malformed page: {exc}") from exc
            if first is None:
                first = checkpoint
            elif checkpoint != first:
                self.consistency(first, checkpoint)
            for item in items:
                index, data = _proven(item, checkpoint)
                if index < start or index <= last:
                    raise VerificationError(f"the service sent entry {index} out of order")
                last = index
                yield index, data
            if after is not None and (not isinstance(after, int) or after <= start):
                raise AuditUnavailable("audit service gave a page that does not move forward")
            start = after

    def snapshot(
        self, dest: Path, progress: Callable[[int, int], None] | None = None
    ) -> Checkpoint:
        """Copy the whole log, as of the current checkpoint, into the new directory ``dest``.

        The copy is an ordinary log directory (verify it offline with ``audit verify``):
        the entries as served, the tree hashes computed here from them, the checkpoint
        (written last, once the entries hash to its root) and the trusted verifier key.
        ``progress(copied, size)`` is told how far the copy is, every 1024 entries.
        """
        if self.tenant is not None:
            raise ValueError("only the whole log can be copied; a tenant's slice is no log")
        if dest.exists() and any(dest.iterdir()):
            raise StorageError(f"{dest} is not empty; a snapshot goes to a new directory")
        note, checkpoint = self.checkpoint()
        dest.mkdir(parents=True, exist_ok=True)
        (dest / CONFIG_FILE).write_bytes(config_bytes(checkpoint.origin))
        key = next((v for v in self.verifiers if v.name == checkpoint.origin), self.verifiers[0])
        write_vkey_file(dest / VKEY_FILE, key)
        with (
            (dest / ENTRIES_FILE).open("xb") as entries,
            (dest / HASHES_FILE).open("xb") as hashes,
            (dest / OFFSETS_FILE).open("xb") as offsets,
        ):
            entries.write(MAGIC)
            position = len(MAGIC)
            for copied, (_, data) in enumerate(self._whole(checkpoint, hashes.write), 1):
                record = encode_record(data)
                offsets.write(position.to_bytes(8, "big"))
                entries.write(record)
                position += len(record)
                if progress is not None and copied % 1024 == 0:
                    progress(copied, checkpoint.size)
            for done in (entries, hashes, offsets):
                done.flush()
                os.fsync(done.fileno())
        (dest / CHECKPOINT_FILE).write_bytes(note)
        return checkpoint

    def receipt(self, index: int) -> tuple[bytes, bytes]:
        """A tlog-proof of entry ``index`` and the entry's bytes, checked together."""
        receipt = self._get(f"/receipt/{index}").content
        if self.tenant is None:
            data = self._get(f"/entries/{index}").content
        else:
            item = self._get(f"/entries/{index}").json()
            data = _decode_entry(item)
        try:
            proof = TlogProof.parse(receipt)
        except MalformedError as exc:
            raise AuditUnavailable(f"audit service gave a malformed receipt: {exc}") from exc
        if proof.index != index:
            raise VerificationError(f"the receipt is for entry {proof.index}, not {index}")
        verify_tlog_proof(proof, data, self.verifiers)
        return receipt, data

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RemoteLog:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


RATE_WAIT = 300.0
"""Most seconds one read waits out 429 answers before it fails."""


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a 429 asks to wait (1 if it does not say); ``None`` for any other answer."""
    if response.status_code != 429:
        return None
    value = response.headers.get("retry-after", "1")
    return float(min(60, max(1, int(value)))) if value.isdigit() else 1.0


def _hashes(body: Any) -> list[bytes]:
    try:
        return [b64decode(h, "proof hash") for h in body["hashes"]]
    except (KeyError, TypeError, MalformedError) as exc:
        raise AuditUnavailable(f"audit service gave a malformed proof: {exc}") from exc


def _decode_entry(item: Any) -> bytes:
    try:
        return base64.b64decode(item["entry"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise AuditUnavailable(f"audit service gave a malformed entry: {exc}") from exc


def _proven(item: Any, checkpoint: Checkpoint) -> tuple[int, bytes]:
    data = _decode_entry(item)
    try:
        index = item["index"]
        proof = [b64decode(h, "proof hash") for h in item["inclusion"]]
    except (KeyError, TypeError, MalformedError) as exc:
        raise AuditUnavailable(f"audit service gave a malformed entry: {exc}") from exc
    if type(index) is not int:
        raise AuditUnavailable("audit service gave an entry without an index")
    verify_inclusion(leaf_hash(data), index, checkpoint.size, proof, checkpoint.root)
    return index, data
