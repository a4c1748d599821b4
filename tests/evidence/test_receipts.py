"""The batch receipt against RFC 6962 itself: for every tree size and subset of leaves,
its root is the tree's, each derived tlog-proof is the RFC 9162 inclusion proof, and a
receipt built from per-entry proofs (as from an audit service) is the same receipt."""

from __future__ import annotations

import random

import pytest

from audit.errors import MalformedError, VerificationError
from audit.merkle import MemoryHashStore, inclusion_proof, leaf_hash
from audit.proof import TlogProof
from sandbox.evidence.receipts import BatchReceipt, build, from_proofs, standalone

CHECKPOINT = b"origin.test\n3\nroot\n\n\xe2\x80\x94 origin.test sig\n"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13, 64, 100, 257])
def test_batch_receipt_matches_rfc6962(size: int) -> None:
    tree = MemoryHashStore(leaf_hash(f"entry {i}".encode()) for i in range(size))
    rng = random.Random(size)  # noqa: S311 -- which leaves to pick, not a secret
    for _ in range(15):
        chosen = sorted(rng.sample(range(size), rng.randint(1, size)))
        data = build(tree, size, chosen, CHECKPOINT)
        receipt = BatchReceipt.parse(data)
        assert receipt.root(size) == tree.root()
        proofs = {i: inclusion_proof(tree, i, size) for i in chosen}
        leaves = {i: tree.subtree_hash(0, i) for i in chosen}
        assert from_proofs(size, leaves, proofs, CHECKPOINT) == data
        for index, proof in standalone(receipt, size).items():
            assert list(TlogProof.parse(proof).hashes) == proofs[index]


def test_a_receipt_that_does_not_fit_the_tree_is_refused() -> None:
    size = 10
    tree = MemoryHashStore(leaf_hash(bytes([i])) for i in range(size))
    receipt = BatchReceipt.parse(build(tree, size, [2, 3, 7], CHECKPOINT))
    assert receipt.nodes
    short = BatchReceipt(receipt.indices, receipt.leaves, receipt.nodes[:-1], CHECKPOINT)
    with pytest.raises(VerificationError, match="fewer node hashes"):
        short.root(size)
    long = BatchReceipt(receipt.indices, receipt.leaves, (*receipt.nodes, b"\0" * 32), CHECKPOINT)
    with pytest.raises(VerificationError, match="more node hashes"):
        long.root(size)
    with pytest.raises(VerificationError, match="outside a tree"):
        receipt.root(7)
    twice = BatchReceipt((2, 2, 7), receipt.leaves, receipt.nodes, CHECKPOINT)
    with pytest.raises(VerificationError, match="ascend"):
        twice.root(size)
    swapped = BatchReceipt(receipt.indices, receipt.leaves[::-1], receipt.nodes, CHECKPOINT)
    assert swapped.root(size) != tree.root()


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"other/v1\n\ncp", "first line"),
        (b"regsandbox.io/evidence-receipts/v1\nleaf 3 AAAA\nleaf 2 AAAA\n\ncp", "ascend"),
        (b"regsandbox.io/evidence-receipts/v1\nleaf 03 AAAA\n\ncp", "plain decimal"),
        (b"regsandbox.io/evidence-receipts/v1\nnode AAAA\nleaf 1 AAAA\n\ncp", "in order"),
        (b"regsandbox.io/evidence-receipts/v1\nleaf 1 !!\n\ncp", "base64"),
        (b"regsandbox.io/evidence-receipts/v1\nleaf 1 AAAA\n\ncp", "32 bytes"),
        (b"regsandbox.io/evidence-receipts/v1\nleaf 1 AAAA\n", "checkpoint"),
    ],
)
def test_malformed_receipts_are_refused(text: bytes, why: str) -> None:
    with pytest.raises(MalformedError, match=why):
        BatchReceipt.parse(text)
