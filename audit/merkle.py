"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification.

Pure functions, no I/O. Leaves are ``SHA-256(0x00 || data)``, interior nodes
``SHA-256(0x01 || left || right)``, the empty tree's root is ``SHA-256("")``.

Proofs are generated from a :class:`HashReader`, which returns the hash of any complete,
aligned subtree ("level ``l``, number ``n``" covers leaves ``[n * 2**l, (n+1) * 2**l)``),
so a store of those hashes gives proofs in O(log n) reads. Stored hashes are laid out in
the order a :class:`CompactRange` produces them while appending leaves: after leaf ``i``
come the hashes of the subtrees that leaf completes, lowest first
(:func:`stored_hash_index`, :func:`stored_hash_count`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Protocol

from audit.errors import VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "HashReader",
    "MemoryHashStore",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "range_hash",
    "root_hash",
    "stored_hash_count",
    "stored_hash_index",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Size of every hash in the tree, in bytes."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root hash of the tree with no leaves."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """Merkle leaf hash of an entry: ``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Interior node hash: ``SHA-256(0x01 || left || right)``."""
    return _sha256(b"\x01" + left + right).digest()


def stored_hash_count(size: int) -> int:
    """How many hashes a store holds for a tree of ``size`` leaves (``2n - popcount(n)``)."""
    return 2 * size - size.bit_count()


def stored_hash_index(level: int, n: int) -> int:
    """Position in the store of the complete subtree ``(level, n)``.

    That subtree is completed by leaf ``m = (n + 1) * 2**level - 1``; leaf ``m``'s own
    hash comes right after the ``stored_hash_count(m)`` hashes of the earlier leaves, and
    the subtrees it completes follow it, one per level.
    """
    last = ((n + 1) << level) - 1
    return stored_hash_count(last) + level


class HashReader(Protocol):
    """Source of complete-subtree hashes for proof generation."""

    def subtree_hash(self, level: int, n: int) -> bytes:
        """Hash of leaves ``[n * 2**level, (n + 1) * 2**level)``."""
        ...


class CompactRange:
    """The right edge of a growing tree: O(log n) state to append leaves and get roots.

    :meth:`append` returns the hashes to store for the new leaf (the leaf hash, then any
    subtrees it completes) in store order, so the same object builds a hash store and
    checks one while streaming through a log.
    """

    __slots__ = ("_stack", "size")

    def __init__(self) -> None:
        self.size = 0
        """Number of leaves appended so far."""
        self._stack: list[bytes] = []

    @classmethod
    def from_reader(cls, reader: HashReader, size: int) -> CompactRange:
        """The right edge of the first ``size`` leaves, read from a hash store."""
        cr = cls()
        pos = 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                cr._stack.append(reader.subtree_hash(level, pos >> level))
                pos += 1 << level
        cr.size = size
        return cr

    def append(self, leaf: bytes) -> list[bytes]:
        """Add a leaf hash; return it followed by the subtree hashes it completes."""
        produced = [leaf]
        h = leaf
        n = self.size
        stack = self._stack
        while n & 1:
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            produced.append(h)
            n >>= 1
        stack.append(h)
        self.size += 1
        return produced

    def root(self) -> bytes:
        """Root hash of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            h = node_hash(left, h)
        return h


class MemoryHashStore:
    """A :class:`HashReader` over a list of stored hashes held in memory."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.hashes: list[bytes] = []
        """Stored hashes, in store order."""
        self._range = CompactRange()
        for leaf in leaves:
            self.append(leaf)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return self._range.size

    def append(self, leaf: bytes) -> None:
        """Add a leaf hash."""
        self.hashes.extend(self._range.append(leaf))

    def root(self) -> bytes:
        """Root hash of the whole tree."""
        return self._range.root()

    def subtree_hash(self, level: int, n: int) -> bytes:
        """Hash of the complete subtree ``(level, n)``."""
        return self.hashes[stored_hash_index(level, n)]


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """Root hash of a tree with the given leaf hashes."""
    cr = CompactRange()
    for leaf in leaves:
        cr.append(leaf)
    return cr.root()


def _split(width: int) -> int:
    """Largest power of two strictly less than ``width`` (``width >= 2``)."""
    return 1 << ((width - 1).bit_length() - 1)


def range_hash(reader: HashReader, start: int, end: int) -> bytes:
    """Hash of leaves ``[start, end)`` where ``start`` is aligned to the range's top.

    Holds for every subtree the RFC 6962 recursion visits: the range is cut into complete
    aligned subtrees, largest first, and folded from the right.
    """
    if end <= start:
        raise ValueError(f"empty range [{start}, {end})")
    parts: list[bytes] = []
    pos = start
    while pos < end:
        level = (end - pos).bit_length() - 1
        while pos & ((1 << level) - 1):  # not aligned: take a smaller block
            level -= 1
        parts.append(reader.subtree_hash(level, pos >> level))
        pos += 1 << level
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


def inclusion_proof(reader: HashReader, index: int, size: int) -> list[bytes]:
    """RFC 9162 inclusion proof (PATH) for leaf ``index`` in the tree of ``size`` leaves.

    Hashes run from the leaf's sibling up to the root's child.
    """
    if not 0 <= index < size:
        raise ValueError(f"index {index} is outside a tree of size {size}")
    top_down: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            top_down.append(range_hash(reader, lo + k, hi))
            hi = lo + k
        else:
            top_down.append(range_hash(reader, lo, lo + k))
            lo += k
    top_down.reverse()
    return top_down


def consistency_proof(reader: HashReader, old_size: int, new_size: int) -> list[bytes]:
    """RFC 9162 consistency proof (PROOF) that tree ``old_size`` is a prefix of ``new_size``."""
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    top_down: list[bytes] = []
    lo, hi, m = 0, new_size, old_size
    complete = True  # SUBPROOF's b: the old tree is a complete subtree seen so far
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            top_down.append(range_hash(reader, lo + k, hi))
            hi = lo + k
        else:
            top_down.append(range_hash(reader, lo, lo + k))
            lo += k
            m -= k
            complete = False
    if not complete:
        top_down.append(range_hash(reader, lo, hi))
    top_down.reverse()
    return top_down


def _check_hashes(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        if len(h) != HASH_SIZE:
            raise VerificationError(f"proof hash {i} is {len(h)} bytes, not {HASH_SIZE}")


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check an inclusion proof (RFC 9162 section 2.1.3.2); raise if it fails."""
    if not 0 <= index < size:
        raise VerificationError(f"index {index} is outside a tree of size {size}")
    if len(leaf) != HASH_SIZE or len(root) != HASH_SIZE:
        raise VerificationError(f"leaf and root hashes must be {HASH_SIZE} bytes")
    _check_hashes(proof)
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise VerificationError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("inclusion proof is too short")
    if r != root:
        raise VerificationError(f"inclusion proof for index {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> None:
    """Check a consistency proof (RFC 9162 section 2.1.4.2); raise if it fails.

    A proof from the empty tree proves nothing and is refused.
    """
    if old_size > new_size:
        raise VerificationError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0:
        raise VerificationError("a consistency proof from the empty tree proves nothing")
    if old_size == new_size:
        if proof:
            raise VerificationError("sizes are equal but the proof is not empty")
        if old_root != new_root:
            raise VerificationError(f"two different roots for the same size {old_size}")
        return
    if not proof:
        raise VerificationError("consistency proof is empty")
    _check_hashes(proof)
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationError("consistency proof is too short")
    if fr != old_root:
        raise VerificationError(f"consistency proof does not lead to the size {old_size} root")
    if sr != new_root:
        raise VerificationError(f"consistency proof does not lead to the size {new_size} root")
