"""One batch receipt for every entry of a pack: leaf hashes and a shared inclusion proof.

A pack may hold 100,000 entries. One C2SP tlog-proof per entry repeats the same interior
hashes and the same checkpoint 100,000 times, and checking them one by one costs minutes.
A pack instead carries ONE receipt file that proves every entry at once against the one
checkpoint, in the spirit of C2SP tlog-tiles (hashes are shared, the verifier recomputes
the tree)::

    regsandbox.io/evidence-receipts/v1
    leaf <index> <base64 leaf hash>     one per entry, index ascending
    node <base64 subtree hash>          the proof: see below
    (blank line)
    <the signed checkpoint, verbatim>

The RFC 6962 tree of the checkpoint is walked from the root, left half before right
half. A subtree that holds none of the listed leaves is not walked into: its hash is the
next ``node`` line. A subtree that holds listed leaves is hashed from its halves, down to
the listed leaf hashes. The root so computed must be the checkpoint's. That is exactly
the check a separate inclusion proof per leaf makes (every such proof is a path through
the same walk), so it is as sound, and each interior hash is computed once.

``leaf`` lines tie each entry's exact bytes (``SHA-256(0x00 || entry)``) to the walk, so
an altered entry or an altered leaf line is named by its index. A standard C2SP
tlog-proof for any one entry is derived from the file by :func:`standalone`; Go's
reference ``tlog`` code accepts those (tests/evidence/test_interop_go.py).
"""

from __future__ import annotations

import binascii
import itertools
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from audit.errors import MalformedError, VerificationError
from audit.merkle import HASH_SIZE, HashReader, node_hash, range_hash, root_hash
from audit.proof import TlogProof

__all__ = ["MAGIC", "BatchReceipt", "build", "from_proofs", "standalone"]

MAGIC = "regsandbox.io/evidence-receipts/v1"
"""First line of a batch receipt."""


def _split(width: int) -> int:
    """RFC 6962's k: the largest power of two strictly less than ``width``."""
    return 1 << ((width - 1).bit_length() - 1)


@dataclass(frozen=True)
class BatchReceipt:
    """A parsed batch receipt (not yet verified)."""

    indices: tuple[int, ...]
    """Index of every proven entry, ascending."""
    leaves: tuple[bytes, ...]
    """Their leaf hashes, same order."""
    nodes: tuple[bytes, ...]
    """Hashes of the subtrees with no proven entry, in walk order."""
    checkpoint: bytes
    """The signed checkpoint note it leads to, verbatim."""

    def to_bytes(self) -> bytes:
        """The receipt in its text form."""
        b64 = binascii.b2a_base64
        parts = [MAGIC.encode(), b"\n"]
        for index, leaf in zip(self.indices, self.leaves, strict=True):
            parts += [b"leaf ", str(index).encode(), b" ", b64(leaf)]
        for node in self.nodes:
            parts += [b"node ", b64(node)]
        parts += [b"\n", self.checkpoint]
        return b"".join(parts)

    @classmethod
    def parse(cls, data: bytes) -> BatchReceipt:
        """Parse a batch receipt; raises :class:`~audit.errors.MalformedError`."""
        split = data.find(b"\n\n")
        if split < 0 or not data[split + 2 :]:
            raise MalformedError("the receipt has no checkpoint after a blank line")
        lines = data[:split].split(b"\n")
        if lines[0] != MAGIC.encode():
            raise MalformedError(f"not a batch receipt: first line must be {MAGIC}")
        indices: list[int] = []
        leaves: list[bytes] = []
        nodes: list[bytes] = []
        try:
            for number, line in enumerate(lines[1:], start=2):
                kind, _, rest = line.partition(b" ")
                if kind == b"leaf" and not nodes:
                    digits, _, value = rest.partition(b" ")
                    if not digits.isdigit() or digits != str(int(digits)).encode():
                        raise MalformedError(f"line {number}: index is not a plain decimal")
                    index = int(digits)
                    if indices and index <= indices[-1]:
                        raise MalformedError(f"line {number}: indices must ascend")
                    indices.append(index)
                    leaves.append(binascii.a2b_base64(value, strict_mode=True))
                elif kind == b"node":
                    nodes.append(binascii.a2b_base64(rest, strict_mode=True))
                else:
                    raise MalformedError(f"line {number} is not a leaf or node line in order")
        except binascii.Error as exc:
            raise MalformedError(f"line {number}: bad base64: {exc}") from exc
        if any(len(h) != HASH_SIZE for h in (*leaves, *nodes)):
            raise MalformedError(f"every hash must be {HASH_SIZE} bytes")
        return cls(tuple(indices), tuple(leaves), tuple(nodes), data[split + 2 :])

    def root(self, size: int, leaves: Sequence[bytes] | None = None) -> bytes:
        """The root hash the walk gives for a tree of ``size`` leaves.

        ``leaves`` replaces :attr:`leaves` (e.g. the hashes of the entries as found).
        Raises :class:`~audit.errors.VerificationError` when the proof does not fit.
        """
        hashes = self.leaves if leaves is None else leaves
        if len(hashes) != len(self.indices):
            raise VerificationError("one leaf hash per index is needed")
        if any(b <= a for a, b in itertools.pairwise(self.indices)):
            raise VerificationError("the indices must ascend, each once")
        if self.indices and self.indices[-1] >= size:
            raise VerificationError(f"index {self.indices[-1]} is outside a tree of size {size}")
        walk = _Walk(self.indices, hashes, iter(self.nodes))
        root = walk.hash(0, size, 0, len(self.indices)) if size else b""
        if next(walk.nodes, None) is not None:
            raise VerificationError("the proof has more node hashes than the tree needs")
        return root


class _Walk:
    """The root-first walk of :class:`BatchReceipt` (recursion depth is log2 of the size)."""

    def __init__(
        self,
        indices: Sequence[int],
        leaves: Sequence[bytes],
        nodes: Iterator[bytes],
        memo: dict[tuple[int, int], bytes] | None = None,
    ) -> None:
        self.indices, self.leaves, self.nodes, self.memo = indices, leaves, nodes, memo

    def hash(self, lo: int, hi: int, a: int, b: int) -> bytes:
        """Hash of leaves ``[lo, hi)``; ``indices[a:b]`` are the proven ones inside it."""
        if a == b:
            node = next(self.nodes, None)
            if node is None:
                raise VerificationError("the proof has fewer node hashes than the tree needs")
            value = node
        elif b - a == hi - lo and self.memo is None:
            value = root_hash(self.leaves[a:b])  # every leaf proven: hash them in one loop
        elif hi - lo == 1:
            value = self.leaves[a]
        else:
            mid = lo + _split(hi - lo)
            m = bisect_left(self.indices, mid, a, b)
            value = node_hash(self.hash(lo, mid, a, m), self.hash(mid, hi, m, b))
        if self.memo is not None:
            self.memo[(lo, hi)] = value
        return value


def build(reader: HashReader, size: int, indices: Sequence[int], checkpoint: bytes) -> bytes:
    """The batch receipt for ``indices`` (ascending) in the tree of ``size`` leaves whose
    complete-subtree hashes ``reader`` holds, leading to ``checkpoint``."""
    nodes: list[bytes] = []

    def walk(lo: int, hi: int, a: int, b: int) -> None:
        if a == b:
            nodes.append(range_hash(reader, lo, hi))
        elif hi - lo > 1 and b - a < hi - lo:
            mid = lo + _split(hi - lo)
            m = bisect_left(indices, mid, a, b)
            walk(lo, mid, a, m)
            walk(mid, hi, m, b)

    if size:
        walk(0, size, 0, len(indices))
    leaves = tuple(reader.subtree_hash(0, i) for i in indices)
    return BatchReceipt(tuple(indices), leaves, tuple(nodes), checkpoint).to_bytes()


def from_proofs(
    size: int,
    leaves: Mapping[int, bytes],
    proofs: Mapping[int, Sequence[bytes]],
    checkpoint: bytes,
) -> bytes:
    """The batch receipt for ``leaves`` (index → leaf hash) from one RFC 6962 inclusion
    proof per index, every one in the tree of ``size`` leaves.

    Each subtree the walk needs and holds no listed leaf is the sibling of a subtree that
    does: its hash is in the inclusion proof of any leaf in that sibling. Nothing is
    checked here; check the result's root (:meth:`BatchReceipt.root`).
    """
    indices = sorted(leaves)
    nodes: list[bytes] = []

    def walk(lo: int, hi: int, a: int, b: int, depth: int) -> None:
        # [lo, hi) holds indices[a:b] (at least one); ``depth`` is its depth from the root.
        if hi - lo == 1:
            return
        mid = lo + _split(hi - lo)
        m = bisect_left(indices, mid, a, b)
        for start, end, first, last, other in ((lo, mid, a, m, b - 1), (mid, hi, m, b, a)):
            if first < last:
                walk(start, end, first, last, depth + 1)
            else:  # the sibling's proofs hold this subtree's hash at this depth
                proof = proofs[indices[other]]
                if len(proof) <= depth:
                    raise VerificationError(f"the proof of {indices[other]} is too short")
                nodes.append(proof[len(proof) - 1 - depth])

    if size and indices:
        walk(0, size, 0, len(indices), 0)
    elif size:
        raise ValueError("a batch receipt needs at least one leaf")
    hashes = tuple(leaves[i] for i in indices)
    return BatchReceipt(tuple(indices), hashes, tuple(nodes), checkpoint).to_bytes()


def standalone(receipt: BatchReceipt, size: int) -> dict[int, bytes]:
    """A C2SP tlog-proof (c2sp.org/tlog-proof@v1) for every entry the batch receipt proves,
    by index. Each is what a per-entry receipt would be; checking them is left to the
    caller (they hold only what the batch receipt holds)."""
    memo: dict[tuple[int, int], bytes] = {}
    _Walk(receipt.indices, receipt.leaves, iter(receipt.nodes), memo).hash(
        0, size, 0, len(receipt.indices)
    )
    proofs: dict[int, bytes] = {}
    for index in receipt.indices:
        path: list[bytes] = []
        lo, hi = 0, size
        while hi - lo > 1:
            mid = lo + _split(hi - lo)
            if index < mid:
                path.append(memo[(mid, hi)])
                hi = mid
            else:
                path.append(memo[(lo, mid)])
                lo = mid
        path.reverse()
        proofs[index] = TlogProof(index, tuple(path), receipt.checkpoint).to_bytes()
    return proofs
