"""Local keys for many sandboxes at once: one provider per shard of sandbox ids.

:class:`~sandbox.keys.local.LocalKeyProvider` holds one lock for all sandboxes while it
reads and writes the wrapped-key store, and with a Secret-backed store that is two API
round trips per new key. With many sandboxes provisioned at once, handler threads then
queue for that lock instead of working in parallel (measured: about half of their time
with 200 sandboxes). The operator therefore spreads sandboxes over independent
providers sharing the KEK and the store. A sandbox always maps to the same shard, so
every guarantee the provider gives for one sandbox — one key, never a second; the
cached plaintext overwritten on destroy — holds unchanged.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from sandbox.keys.base import KeyDestruction, KeyRef
from sandbox.keys.local import LocalKeyProvider

__all__ = ["SHARDS_PER_WORKER", "ShardedLocalKeys"]

SHARDS_PER_WORKER = 4
"""Shards per handler thread, so that handlers running at once rarely share one."""


class ShardedLocalKeys:
    """A ``KeyProvider`` that routes each sandbox id to one of several local providers."""

    def __init__(self, shards: Sequence[LocalKeyProvider]) -> None:
        """Route over ``shards``; they must share the KEK and the wrapped-key store."""
        if not shards:
            raise ValueError("at least one shard is needed")
        if len({shard.kek_id for shard in shards}) != 1:
            raise ValueError("every shard must hold the same KEK")
        self._shards = tuple(shards)

    def __repr__(self) -> str:
        return f"ShardedLocalKeys(shards={len(self._shards)}, first={self._shards[0]!r})"

    def _shard(self, sandbox_id: str) -> LocalKeyProvider:
        """The provider for ``sandbox_id``: stable across calls and processes."""
        return self._shards[zlib.crc32(sandbox_id.encode()) % len(self._shards)]

    @property
    def name(self) -> str:
        """``local``."""
        return self._shards[0].name

    @property
    def kek_id(self) -> str:
        """Fingerprint of the KEK every shard holds (safe to show)."""
        return self._shards[0].kek_id

    def create(self, sandbox_id: str, region: str, tags: dict[str, str]) -> KeyRef:
        """Make the sandbox's key, or return the one already made."""
        return self._shard(sandbox_id).create(sandbox_id, region, tags)

    def get(self, sandbox_id: str) -> KeyRef | None:
        """The sandbox's key, or None when it has none."""
        return self._shard(sandbox_id).get(sandbox_id)

    def data_key(self, sandbox_id: str) -> bytes:
        """The plaintext data key, for the storage profile's Secret. Never log it."""
        return self._shard(sandbox_id).data_key(sandbox_id)

    def destroy(self, sandbox_id: str) -> KeyDestruction:
        """Delete the wrapped key and overwrite the cached plaintext (crypto-shredding)."""
        return self._shard(sandbox_id).destroy(sandbox_id)
