"""The witness against c2sp.org/tlog-witness, one MUST rule per test, over real HTTP.

Each docstring quotes the rule it checks (tlog-witness.md, "add-checkpoint" and
"Monitor Retrieval Mechanism"). The witness runs with uvicorn on loopback; its state is a
real directory, reopened where the rule is about persistence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.merkle import EMPTY_ROOT, leaf_hash
from audit.note import Note, NoteSignature, Signer, b64encode, open_note
from audit.witness import SIZE_CONTENT_TYPE, Cosigner, FileWitnessState, Witness, witness_app

from .test_witness import NOW, ORIGIN, Tree

Post = Callable[[bytes], httpx.Response]


@pytest.fixture
def log_key() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.fixture
def tree(log_key: Signer) -> Tree:
    return Tree(log_key, [f"entry {i}".encode() for i in range(40)])


@pytest.fixture
def cosigner() -> Cosigner:
    return Cosigner.generate("witness.regsandbox.test/w1")


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "witness-state"


@pytest.fixture
def witness(cosigner: Cosigner, log_key: Signer, state_dir: Path) -> Iterator[Witness]:
    state = FileWitnessState(state_dir)
    yield Witness(cosigner, {ORIGIN: [log_key.verifier]}, state, clock=lambda: NOW)
    state.close()


@pytest.fixture
def http(witness: Witness, serve: Callable[..., Any]) -> Iterator[httpx.Client]:
    with serve(witness_app(witness)) as url, httpx.Client(base_url=url) as client:
        yield client


@pytest.fixture
def post(http: httpx.Client) -> Post:
    return lambda body: http.post("/add-checkpoint", content=body)


def _size(witness: Witness) -> int | None:
    latest = witness.latest(ORIGIN)
    return None if latest is None else latest.size


def assert_refused(response: httpx.Response, status: int) -> None:
    """Refused with ``status`` and no cosignature in the answer."""
    assert response.status_code == status, response.text
    assert "\u2014" not in response.text


# -- request format -----------------------------------------------------------------------


def test_request_must_be_a_post(http: httpx.Client, tree: Tree, witness: Witness) -> None:
    """'The request MUST be an HTTP POST.'"""
    for method in ("GET", "PUT", "DELETE"):
        response = http.request(method, "/add-checkpoint", content=tree.request(0, 3))
        assert response.status_code == 405
    assert _size(witness) is None


def test_body_is_old_line_proof_lines_empty_line_then_checkpoint(
    post: Post, tree: Tree, witness: Witness
) -> None:
    """'The request body MUST be a sequence of an old size line, zero or more consistency
    proof lines, and an empty line, followed by a checkpoint.'"""
    cp = tree.checkpoint(3)
    for body in (cp, b"old 0\n" + cp, b"\n" + cp, b"old 0\n\n", b"old 0\n\nnot a note\n"):
        assert_refused(post(body), 400)
    assert post(b"old 0\n\n" + cp).status_code == 200


def test_each_line_ends_in_a_newline(post: Post, tree: Tree) -> None:
    """'Each line MUST terminate in a newline character (U+000A).'"""
    cp = tree.checkpoint(3)
    assert_refused(post(b"old 0\r\n\r\n" + cp), 400)
    assert_refused(post(b"old 0"), 400)


def test_old_size_line_is_old_space_decimal_without_leading_zeroes(post: Post, tree: Tree) -> None:
    """'The old size line MUST consist of the string old, a single space (0x20), and the
    tree size of the previous checkpoint encoded as an ASCII decimal with no leading
    zeroes (unless the size is zero, in which case the encoding MUST be 0).'"""
    cp = tree.checkpoint(3)
    for head in (b"old 00", b"old 01", b"old  0", b"old\t0", b"Old 0", b"old +0", b"old -0"):
        assert_refused(post(head + b"\n\n" + cp), 400)
    assert post(b"old 0\n\n" + cp).status_code == 200


def test_each_proof_line_is_one_base64_hash(post: Post, tree: Tree) -> None:
    """'Each consistency proof line MUST encode a single hash in base64.'"""
    post(tree.request(0, 4))
    cp = tree.checkpoint(9)
    two = b64encode(bytes(64)).encode()
    short = b64encode(bytes(31)).encode()
    for line in (b"not base64!", two, short, b""):
        assert_refused(post(b"old 4\n" + line + b"\n\n" + cp), 400)


def test_more_than_63_proof_lines_are_refused(post: Post, tree: Tree) -> None:
    """'The client MUST NOT send more than 63 consistency proof lines.'"""
    post(tree.request(0, 4))
    lines = (b64encode(bytes(32)) + "\n").encode() * 64
    assert_refused(post(b"old 4\n" + lines + b"\n" + tree.checkpoint(9)), 400)


# -- signatures and origin --------------------------------------------------------------


def test_signatures_from_unknown_keys_are_ignored(
    post: Post, tree: Tree, log_key: Signer, cosigner: Cosigner
) -> None:
    """'The witness MUST verify the checkpoint signature against the public key(s) it
    trusts for the checkpoint origin, and it MUST ignore signatures from unknown keys.'"""
    stranger = Signer.generate(ORIGIN)
    checkpoint = Checkpoint.from_text(Note.parse(tree.checkpoint(5)).text)
    both = sign_checkpoint(checkpoint, [stranger, log_key])
    response = post(b"old 0\n\n" + both)
    assert response.status_code == 200
    assert cosigner.verifier.verify_note(both + response.content) == NOW
    only_stranger = sign_checkpoint(checkpoint, [stranger])
    assert_refused(post(b"old 5\n\n" + only_stranger), 403)


def test_unknown_origin_is_404(post: Post) -> None:
    """'If the checkpoint origin is unknown, the witness MUST respond with a "404 Not
    Found" HTTP status code.'"""
    other = Signer.generate("other.example/log")
    cp = sign_checkpoint(Checkpoint("other.example/log", 1, leaf_hash(b"x")), [other])
    assert_refused(post(b"old 0\n\n" + cp), 404)


def test_no_trusted_signature_or_a_bad_one_is_403(
    post: Post, tree: Tree, log_key: Signer, witness: Witness
) -> None:
    """'The witness MUST respond with a "403 Forbidden" HTTP status code if either no
    signature from a trusted key for the origin is present, or a signature line's key
    name and ID match a trusted key but the signature itself fails to verify.'"""
    impostor = Tree(Signer.generate(ORIGIN), tree.leaves)
    assert_refused(post(impostor.request(0, 5)), 403)
    note = Note.parse(tree.checkpoint(5))
    [good] = note.signatures
    flipped = bytes([good.signature[0] ^ 1]) + good.signature[1:]
    bad = Note(note.text, (NoteSignature(good.name, good.key_id, flipped),)).to_bytes()
    assert_refused(post(b"old 0\n\n" + bad), 403)
    # a valid trusted signature does not excuse a bad one by the same key
    both = Note(note.text, (good, NoteSignature(good.name, good.key_id, flipped))).to_bytes()
    assert_refused(post(b"old 0\n\n" + both), 403)
    assert _size(witness) is None


# -- sizes and consistency ---------------------------------------------------------------


def test_old_size_above_checkpoint_size_is_400(post: Post, tree: Tree, witness: Witness) -> None:
    """'The old size MUST be equal to or lower than the checkpoint size. Otherwise, the
    witness MUST respond with a "400 Bad Request" HTTP status code.'"""
    post(tree.request(0, 7))
    assert_refused(post(tree.request(7, 3, proof=[])), 400)
    assert_refused(post(b"old 9\n\n" + tree.checkpoint(3)), 400)
    assert _size(witness) == 7


def test_old_size_must_be_the_witness_size_else_409_with_that_size(
    post: Post, tree: Tree, witness: Witness
) -> None:
    """'The witness MUST check that the old size matches the size of the latest checkpoint
    it cosigned for the checkpoint's origin (or zero if it never cosigned a checkpoint for
    that origin). If it doesn't match, the witness MUST respond with a "409 Conflict" HTTP
    status code. The response body MUST consist of the tree size of the latest cosigned
    checkpoint in decimal, followed by a newline (U+000A). The response MUST have a
    Content-Type of text/x.tlog.size.'"""
    never = post(tree.request(3, 8))
    assert_refused(never, 409)
    assert never.text == "0\n"
    assert never.headers["content-type"] == SIZE_CONTENT_TYPE
    post(tree.request(0, 6))
    for old in (0, 3, 7):
        stale = post(tree.request(old, 9))
        assert_refused(stale, 409)
        assert stale.text == "6\n"
        assert stale.headers["content-type"] == SIZE_CONTENT_TYPE
    assert _size(witness) == 6


def test_size_zero_checkpoint_must_have_the_empty_tree_root(
    post: Post, log_key: Signer, witness: Witness
) -> None:
    """'A checkpoint of size zero MUST have the root hash of the empty tree, which RFC 6962,
    Section 2.1 defines as the hash of the empty string. Otherwise, the witness MUST respond
    with a "422 Unprocessable Entity" HTTP status code.'"""
    bogus = sign_checkpoint(Checkpoint(ORIGIN, 0, leaf_hash(b"x")), [log_key])
    assert_refused(post(b"old 0\n\n" + bogus), 422)
    assert _size(witness) is None
    empty = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), [log_key])
    assert post(b"old 0\n\n" + empty).status_code == 200
    assert_refused(post(b"old 0\n\n" + bogus), 422)  # also once size 0 is on record


def test_non_empty_proof_from_old_size_zero_is_422(
    post: Post, tree: Tree, witness: Witness
) -> None:
    """'If the old size is zero, the consistency proof MUST be empty [...] If the proof is
    not empty when the old size is zero [...] the witness MUST respond with a "422
    Unprocessable Entity" HTTP status code.'"""
    proof = [leaf_hash(tree.leaves[0])]
    assert_refused(post(tree.request(0, 5, proof=proof)), 422)
    assert _size(witness) is None
    assert post(tree.request(0, 5)).status_code == 200


def test_consistency_proof_that_does_not_verify_is_422(
    post: Post, tree: Tree, log_key: Signer, witness: Witness
) -> None:
    """'Otherwise, the consistency proof lines MUST encode a Merkle Consistency Proof from
    the old size to the checkpoint size according to RFC 6962, Section 2.1.2. [...] if a
    Merkle Consistency Proof doesn't verify, the witness MUST respond with a "422
    Unprocessable Entity" HTTP status code.'"""
    post(tree.request(0, 7))
    forked = Tree(log_key, [b"forged", *tree.leaves[1:]])
    assert_refused(post(forked.request(7, 12)), 422)  # a rewritten history
    assert_refused(post(tree.request(7, 12, proof=[bytes(32)] * 3)), 422)
    assert_refused(post(tree.request(7, 12, proof=[])), 422)
    assert _size(witness) == 7
    assert post(tree.request(7, 12)).status_code == 200


def test_equal_size_with_another_root_is_422(
    post: Post, tree: Tree, log_key: Signer, witness: Witness, cosigner: Cosigner
) -> None:
    """'If the old size matches the checkpoint size, the witness MUST check that the root
    hashes are also identical. If they don't match, the witness MUST respond with a "422
    Unprocessable Entity" HTTP status code.'"""
    post(tree.request(0, 7))
    forked = Tree(log_key, [b"forged", *tree.leaves[1:]])
    assert_refused(post(forked.request(7, 7, proof=[])), 422)
    assert witness.latest(ORIGIN) == Checkpoint.from_text(Note.parse(tree.checkpoint(7)).text)
    same = post(tree.request(7, 7))  # the same checkpoint again is cosigned again
    assert cosigner.verifier.verify_note(tree.checkpoint(7) + same.content) == NOW


# -- success, persistence -----------------------------------------------------------------


def test_success_updates_the_record_and_answers_cosignature_lines(
    post: Post, tree: Tree, witness: Witness, cosigner: Cosigner
) -> None:
    """'If all the checks above pass, the witness MUST update its record of the latest
    cosigned checkpoint and respond with a "200 Success" HTTP status code. The response
    body MUST be a sequence of one or more note signature lines, each starting with the —
    character (U+2014) and ending with a newline character (U+000A). The signatures MUST
    be cosignatures from the witness key(s) on the checkpoint.'"""
    for old, new in ((0, 4), (4, 4), (4, 13)):
        response = post(tree.request(old, new))
        assert response.status_code == 200
        lines = response.content.decode().split("\n")
        assert lines[-1] == ""
        assert len(lines) >= 2
        assert all(line.startswith("\u2014 ") for line in lines[:-1])
        assert cosigner.verifier.verify_note(tree.checkpoint(new) + response.content) == NOW
        assert _size(witness) == new


def test_cosignature_timestamp_is_never_zero(
    tree: Tree, cosigner: Cosigner, log_key: Signer, tmp_path: Path, serve: Callable[..., Any]
) -> None:
    """'The cosignature MUST NOT omit the timestamp, i.e. the timestamp MUST NOT be zero.'"""
    state = FileWitnessState(tmp_path / "zero-clock")
    stopped = Witness(cosigner, {ORIGIN: [log_key.verifier]}, state, clock=lambda: 0.0)
    with serve(witness_app(stopped)) as url:
        response = httpx.post(f"{url}/add-checkpoint", content=tree.request(0, 3))
    state.close()
    assert_refused(response, 503)
    assert stopped.latest(ORIGIN) is None


def test_the_new_checkpoint_is_persisted_before_the_answer(
    post: Post, tree: Tree, cosigner: Cosigner, log_key: Signer, state_dir: Path, witness: Witness
) -> None:
    """'The witness MUST persist the new checkpoint before responding.' (Checking and
    persisting happen under one lock; test_witness.py races twelve submissions.)"""
    assert post(tree.request(0, 9)).status_code == 200
    witness.state.close()  # type: ignore[attr-defined]
    reopened = FileWitnessState(state_dir)
    try:
        again = Witness(cosigner, {ORIGIN: [log_key.verifier]}, reopened)
        assert again.latest(ORIGIN) == Checkpoint.from_text(Note.parse(tree.checkpoint(9)).text)
    finally:
        reopened.close()


def test_refused_checkpoints_are_never_cosigned_or_recorded(
    post: Post, tree: Tree, log_key: Signer, state_dir: Path
) -> None:
    """'[...] the witness MAY log the request even if the checkpoint fails one of the
    consistency checks above (but MUST NOT cosign the checkpoint).'"""
    post(tree.request(0, 7))
    before = sorted(p.read_bytes() for p in state_dir.glob("*.checkpoint"))
    forked = Tree(log_key, [b"forged", *tree.leaves[1:]])
    for body in (forked.request(7, 7, proof=[]), forked.request(7, 12), tree.request(3, 12)):
        assert post(body).status_code in (409, 422)
    assert sorted(p.read_bytes() for p in state_dir.glob("*.checkpoint")) == before


# -- monitoring ---------------------------------------------------------------------------


def test_monitoring_serves_the_cosigned_checkpoint_by_origin_hash(
    http: httpx.Client, post: Post, tree: Tree, log_key: Signer, cosigner: Cosigner
) -> None:
    """'GET <monitoring prefix>/<origin hash>/checkpoint [...] The origin hash is the
    SHA-256 hash of the log's origin, hex encoded, in lowercase. The response body MUST be
    a checkpoint for the log identified by the origin, and it MUST include the
    cosignature(s) from the witness's key(s) that were returned from add-checkpoint and the
    cosignature from the log key(s) that the witness verified. If the witness has never
    cosigned a checkpoint for that log, it MUST respond with a "404 Not Found" HTTP status
    code instead.'"""
    origin_hash = hashlib.sha256(ORIGIN.encode()).hexdigest()
    assert http.get(f"/{origin_hash}/checkpoint").status_code == 404
    returned = post(tree.request(0, 6)).content
    served = http.get(f"/{origin_hash}/checkpoint")
    assert served.status_code == 200
    open_note(served.content, [log_key.verifier])
    assert cosigner.verifier.verify_note(served.content) == NOW
    assert returned.decode() in served.text
    assert http.post(f"/{origin_hash}/checkpoint").status_code == 405
    assert http.get(f"/{origin_hash.upper()}/checkpoint").status_code == 404
