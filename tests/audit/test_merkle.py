"""Merkle hashing and proofs: RFC 6962 vectors and properties over many tree sizes."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.errors import VerificationError
from audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryHashStore,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    stored_hash_count,
    stored_hash_index,
    verify_consistency,
    verify_inclusion,
)


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _vector_files(vectors: Path, kind: str) -> list[Path]:
    files = sorted((vectors / "rfc6962" / kind).rglob("*.json"))
    assert files, f"no {kind} vectors found"
    return files


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_every_inclusion_vector(vectors: Path) -> None:
    checked = 0
    for path in _vector_files(vectors, "inclusion"):
        v = _load(path)
        proof = [_b64(p) for p in v["proof"] or []]
        args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], proof, _b64(v["root"]))
        if v["wantErr"]:
            with pytest.raises(VerificationError):
                verify_inclusion(*args)
        else:
            verify_inclusion(*args)
        checked += 1
    assert checked >= 50


def test_every_consistency_vector(vectors: Path) -> None:
    checked = 0
    for path in _vector_files(vectors, "consistency"):
        v = _load(path)
        proof = [_b64(p) for p in v["proof"] or []]
        args = (v["size1"], v["size2"], proof, _b64(v["root1"]), _b64(v["root2"]))
        if v["wantErr"]:
            with pytest.raises(VerificationError):
                verify_consistency(*args)
        else:
            verify_consistency(*args)
        checked += 1
    assert checked >= 50


def _rfc6962_leaves() -> list[bytes]:
    # The eight leaves of the RFC 6962 / transparency-dev test tree.
    raw = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    return [leaf_hash(bytes.fromhex(x)) for x in raw]


def test_reference_tree_roots_match_the_vectors(vectors: Path) -> None:
    leaves = _rfc6962_leaves()
    happy = _load(vectors / "rfc6962" / "inclusion" / "1" / "happy-path.json")
    assert root_hash(leaves[: happy["treeSize"]]) == _b64(happy["root"])
    store = MemoryHashStore(leaves)
    assert inclusion_proof(store, happy["leafIdx"], happy["treeSize"]) == [
        _b64(p) for p in happy["proof"]
    ]
    cons = _load(vectors / "rfc6962" / "consistency" / "1" / "happy-path.json")
    assert consistency_proof(store, cons["size1"], cons["size2"]) == [
        _b64(p) for p in cons["proof"]
    ]


def _naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def _leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert root_hash([]) == hashlib.sha256(b"").digest() == EMPTY_ROOT


def test_stored_hash_layout_matches_compact_range() -> None:
    store = MemoryHashStore(_leaves(70))
    assert len(store.hashes) == stored_hash_count(70)
    for level in range(7):
        for n in range(70 >> level):
            start, end = n << level, (n + 1) << level
            expected = _naive_root(_leaves(70)[start:end])
            assert store.hashes[stored_hash_index(level, n)] == expected


MAX_SIZE = 70
_STORE = MemoryHashStore(_leaves(MAX_SIZE))
_ROOTS = [_naive_root(_leaves(n)) for n in range(MAX_SIZE + 1)]


def test_roots_match_the_recursive_definition() -> None:
    cr = CompactRange()
    for n, leaf in enumerate(_leaves(MAX_SIZE), start=1):
        cr.append(leaf)
        assert cr.root() == _ROOTS[n]


def test_inclusion_proofs_for_every_index_and_size() -> None:
    for size in range(1, MAX_SIZE + 1):
        for index in range(size):
            proof = inclusion_proof(_STORE, index, size)
            verify_inclusion(
                _STORE.hashes[stored_hash_index(0, index)], index, size, proof, _ROOTS[size]
            )


def test_consistency_proofs_for_every_size_pair() -> None:
    for new in range(1, MAX_SIZE + 1):
        for old in range(1, new + 1):
            proof = consistency_proof(_STORE, old, new)
            verify_consistency(old, new, proof, _ROOTS[old], _ROOTS[new])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_tampered_inclusion_proofs_fail(data: st.DataObject) -> None:
    size = data.draw(st.integers(2, MAX_SIZE))
    index = data.draw(st.integers(0, size - 1))
    proof = inclusion_proof(_STORE, index, size)
    leaf = _STORE.hashes[stored_hash_index(0, index)]
    mutation = data.draw(st.sampled_from(["flip", "index", "size", "drop", "extra"]))
    if mutation == "flip":
        i = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        bad = bytearray(proof[i])
        bad[bit // 8] ^= 1 << (bit % 8)
        proof[i] = bytes(bad)
    elif mutation == "index":
        index = data.draw(st.integers(0, size - 1).filter(lambda x: x != index))
        # Leaves are distinct, so another index cannot share this leaf's path.
    elif mutation == "size":
        size = data.draw(st.integers(1, MAX_SIZE).filter(lambda x: x != size))
    elif mutation == "drop":
        proof = proof[:-1]
    else:
        proof = [*proof, leaf]
    with pytest.raises(VerificationError):
        verify_inclusion(leaf, index, size, proof, _ROOTS[size])


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_tampered_consistency_proofs_fail(data: st.DataObject) -> None:
    new = data.draw(st.integers(2, MAX_SIZE))
    old = data.draw(st.integers(1, new - 1))
    proof = consistency_proof(_STORE, old, new)
    mutation = data.draw(st.sampled_from(["flip", "old", "new", "drop", "extra", "swap"]))
    old_root, new_root = _ROOTS[old], _ROOTS[new]
    if mutation == "flip":
        i = data.draw(st.integers(0, len(proof) - 1))
        bad = bytearray(proof[i])
        bad[data.draw(st.integers(0, 31))] ^= 0x80
        proof[i] = bytes(bad)
    elif mutation == "old":
        old_root = _ROOTS[data.draw(st.integers(1, new - 1).filter(lambda x: x != old))]
    elif mutation == "new":
        new_root = _ROOTS[data.draw(st.integers(1, MAX_SIZE).filter(lambda x: x != new))]
    elif mutation == "drop":
        proof = proof[:-1]
    elif mutation == "extra":
        proof = [*proof, _ROOTS[1]]
    else:
        old_root, new_root = new_root, old_root
    with pytest.raises(VerificationError):
        verify_consistency(old, new, proof, old_root, new_root)


def test_proof_generation_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError, match="outside"):
        inclusion_proof(_STORE, 5, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(_STORE, 0, 5)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(_STORE, 6, 5)
