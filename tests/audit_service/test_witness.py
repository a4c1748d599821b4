"""The C2SP tlog-witness: cosigns consistent checkpoints, refuses forks and rollbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.errors import MalformedError, StorageError, VerificationError
from audit.merkle import MemoryHashStore, consistency_proof, leaf_hash
from audit.note import Note, Signer, b64encode, open_note
from audit.witness import (
    SIZE_CONTENT_TYPE,
    CosignatureVerifier,
    Cosigner,
    FileWitnessState,
    Witness,
    WitnessRefusedError,
    check_add_checkpoint,
    parse_add_checkpoint,
    witness_app,
)

ORIGIN = "audit.regsandbox.test/log"
NOW = 1_750_000_000


class Tree:
    """A log in memory that signs checkpoints for any prefix of its leaves."""

    def __init__(self, signer: Signer, leaves: list[bytes]) -> None:
        self.signer = signer
        self.store = MemoryHashStore(leaf_hash(x) for x in leaves)
        self.leaves = leaves

    def checkpoint(self, size: int) -> bytes:
        root = MemoryHashStore(leaf_hash(x) for x in self.leaves[:size]).root()
        return sign_checkpoint(Checkpoint(ORIGIN, size, root), [self.signer])

    def request(self, old: int, size: int, proof: list[bytes] | None = None) -> bytes:
        if proof is None:
            proof = consistency_proof(self.store, old, size) if 0 < old < size else []
        head = f"old {old}\n" + "".join(b64encode(h) + "\n" for h in proof)
        return head.encode() + b"\n" + self.checkpoint(size)


@pytest.fixture
def log_key() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture
def tree(log_key: Signer) -> Tree:
    return Tree(log_key, [f"entry {i}".encode() for i in range(20)])


@pytest.fixture
def cosigner() -> Cosigner:
    return Cosigner.generate("witness.regsandbox.test/w1")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[FileWitnessState]:
    s = FileWitnessState(tmp_path / "witness")
    yield s
    s.close()


@pytest.fixture
def witness(cosigner: Cosigner, log_key: Signer, state: FileWitnessState) -> Witness:
    return Witness(cosigner, {ORIGIN: [log_key.verifier]}, state, clock=lambda: NOW)


def refusal(witness: Witness, body: bytes) -> WitnessRefusedError:
    with pytest.raises(WitnessRefusedError) as info:
        witness.add_checkpoint(body)
    return info.value


# -- cosignatures -----------------------------------------------------------------------


def test_cosignature_verifies_and_carries_its_timestamp(cosigner: Cosigner, tree: Tree) -> None:
    checkpoint = Checkpoint.from_text(Note.parse(tree.checkpoint(5)).text)
    line = cosigner.cosign(checkpoint, NOW).line()
    note = tree.checkpoint(5) + line.encode()
    assert cosigner.verifier.verify_note(note) == NOW
    other = Cosigner.generate(cosigner.name)
    with pytest.raises(VerificationError):
        other.verifier.verify_note(note)


def test_cosignature_signs_the_spec_message(cosigner: Cosigner) -> None:
    checkpoint = Checkpoint(ORIGIN, 3, bytes(32))
    sig = cosigner.cosign(checkpoint, 1679315147)
    assert sig.signature[:8] == (1679315147).to_bytes(8, "big")
    message = f"cosignature/v1\ntime 1679315147\n{checkpoint.text()}".encode()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(cosigner.verifier.public_key).verify(
        sig.signature[8:], message
    )


def test_cosigner_keys_use_type_0x04_and_round_trip(cosigner: Cosigner) -> None:
    parsed = CosignatureVerifier.from_vkey(cosigner.verifier.vkey)
    assert parsed == cosigner.verifier
    assert Cosigner.from_private_key(cosigner.private_key).verifier == cosigner.verifier
    # a note (0x01) key of the same name and public key has a different key ID
    from audit.note import key_id

    assert parsed.key_id != key_id(parsed.name, parsed.public_key)
    with pytest.raises(MalformedError):
        CosignatureVerifier.from_vkey(Signer.generate("x").verifier.vkey)


# -- add-checkpoint ---------------------------------------------------------------------


def test_first_checkpoint_is_cosigned_and_recorded(
    witness: Witness, tree: Tree, cosigner: Cosigner
) -> None:
    lines = witness.add_checkpoint(tree.request(0, 5))
    assert lines.startswith("\u2014 witness.regsandbox.test/w1 ".encode())
    assert cosigner.verifier.verify_note(tree.checkpoint(5) + lines) == NOW
    latest = witness.latest(ORIGIN)
    assert latest is not None
    assert latest.size == 5


def test_consistent_extension_is_cosigned(witness: Witness, tree: Tree, cosigner: Cosigner) -> None:
    witness.add_checkpoint(tree.request(0, 3))
    lines = witness.add_checkpoint(tree.request(3, 11))
    assert cosigner.verifier.verify_note(tree.checkpoint(11) + lines) == NOW
    assert witness.latest(ORIGIN) == Checkpoint.from_text(Note.parse(tree.checkpoint(11)).text)
    # the same checkpoint again is fine and cosigned again
    witness.add_checkpoint(tree.request(11, 11))


def test_rollback_is_refused_with_409_and_the_witness_size(witness: Witness, tree: Tree) -> None:
    witness.add_checkpoint(tree.request(0, 7))
    refused = refusal(witness, tree.request(3, 3))
    assert refused.status == 409
    assert refused.body == "7\n"
    assert refused.content_type == SIZE_CONTENT_TYPE
    # claiming the right old size with a smaller checkpoint is a bad request
    assert refusal(witness, tree.request(7, 3, proof=[])).status == 400
    assert witness.latest(ORIGIN).size == 7  # type: ignore[union-attr]


def test_fork_of_equal_size_is_refused_with_422(
    witness: Witness, tree: Tree, log_key: Signer
) -> None:
    witness.add_checkpoint(tree.request(0, 7))
    forked = Tree(log_key, [b"forged", *tree.leaves[1:]])
    refused = refusal(witness, forked.request(7, 7, proof=[]))
    assert refused.status == 422
    assert witness.latest(ORIGIN) == Checkpoint.from_text(Note.parse(tree.checkpoint(7)).text)


def test_fork_that_extends_fails_its_proof_with_422(
    witness: Witness, tree: Tree, log_key: Signer
) -> None:
    witness.add_checkpoint(tree.request(0, 7))
    forked = Tree(log_key, [b"forged", *tree.leaves[1:]])
    assert refusal(witness, forked.request(7, 12)).status == 422
    garbage = [bytes(32)] * 3
    assert refusal(witness, tree.request(7, 12, proof=garbage)).status == 422
    assert witness.latest(ORIGIN).size == 7  # type: ignore[union-attr]


def test_stale_old_size_gets_409_with_current_size(witness: Witness, tree: Tree) -> None:
    witness.add_checkpoint(tree.request(0, 4))
    refused = refusal(witness, tree.request(0, 9))
    assert (refused.status, refused.body) == (409, "4\n")


def test_unknown_origin_is_404_and_bad_signature_403(witness: Witness, tree: Tree) -> None:
    stranger = Tree(Signer.generate("other.example/log"), tree.leaves)
    body = b"old 0\n\n" + sign_checkpoint(
        Checkpoint("other.example/log", 1, leaf_hash(b"x")), [stranger.signer]
    )
    assert refusal(witness, body).status == 404
    impostor = Tree(Signer.generate(ORIGIN), tree.leaves)
    assert refusal(witness, impostor.request(0, 5)).status == 403
    assert witness.latest(ORIGIN) is None


def test_malformed_requests_are_400(witness: Witness, tree: Tree) -> None:
    cp = tree.checkpoint(5)
    for body in (
        b"",
        cp,
        b"old 01\n\n" + cp,
        b"old -1\n\n" + cp,
        b"old 0\nnot base64!\n\n" + cp,
        b"old 0\n" + b64encode(b"short").encode() + b"\n\n" + cp,
        b"old 0\n" + (b64encode(bytes(32)) + "\n").encode() * 64 + b"\n" + cp,
        b"old 0\n\nnot a checkpoint\n",
    ):
        assert refusal(witness, body).status == 400, body


def test_state_survives_a_restart(
    tmp_path: Path, cosigner: Cosigner, log_key: Signer, tree: Tree
) -> None:
    state = FileWitnessState(tmp_path / "w")
    Witness(cosigner, {ORIGIN: [log_key.verifier]}, state).add_checkpoint(tree.request(0, 6))
    with pytest.raises(StorageError, match="in use"):
        FileWitnessState(tmp_path / "w")
    state.close()
    reopened = FileWitnessState(tmp_path / "w")
    again = Witness(cosigner, {ORIGIN: [log_key.verifier]}, reopened)
    assert refusal(again, tree.request(0, 6)).body == "6\n"
    reopened.close()
    assert not list((tmp_path / "w").glob("*.partial"))


def test_check_is_pure(tree: Tree, log_key: Signer) -> None:
    request = parse_add_checkpoint(tree.request(0, 2))
    got = check_add_checkpoint(request, {ORIGIN: [log_key.verifier]}, None)
    assert got.size == 2


# -- HTTP -------------------------------------------------------------------------------


def test_http_add_checkpoint(
    witness: Witness, tree: Tree, cosigner: Cosigner, serve: Callable[..., Any]
) -> None:
    with serve(witness_app(witness)) as url, httpx.Client(base_url=url) as client:
        check_http(client, tree, cosigner)


def check_http(client: httpx.Client, tree: Tree, cosigner: Cosigner) -> None:
    ok = client.post("/add-checkpoint", content=tree.request(0, 8))
    assert ok.status_code == 200
    note = tree.checkpoint(8) + ok.content
    open_note(note, [tree.signer.verifier])
    assert cosigner.verifier.verify_note(note) == NOW
    conflict = client.post("/add-checkpoint", content=tree.request(2, 9))
    assert conflict.status_code == 409
    assert conflict.headers["content-type"].startswith(SIZE_CONTENT_TYPE)
    assert conflict.text == "8\n"
    assert client.post("/add-checkpoint", content=b"junk").status_code == 400
    assert client.get("/add-checkpoint").status_code == 405


def test_concurrent_requests_cannot_roll_the_witness_back(witness: Witness, tree: Tree) -> None:
    import threading

    witness.add_checkpoint(tree.request(0, 2))
    results: dict[int, int] = {}

    def submit(size: int) -> None:
        try:
            witness.add_checkpoint(tree.request(2, size))
            results[size] = 200
        except WitnessRefusedError as exc:
            results[size] = exc.status

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(3, 15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    accepted = [size for size, status in results.items() if status == 200]
    assert len(accepted) == 1
    assert set(results.values()) == {200, 409}
    assert witness.latest(ORIGIN).size == accepted[0]  # type: ignore[union-attr]
