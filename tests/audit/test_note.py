"""Signed notes, verifier keys, checkpoints and tlog-proofs: spec examples and round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from audit.errors import MalformedError, VerificationError
from audit.merkle import MemoryHashStore, inclusion_proof, leaf_hash
from audit.note import Note, Signer, Verifier, key_id, open_note, sign_note
from audit.proof import TlogProof, verify_tlog_proof


@pytest.fixture
def example(vectors: Path) -> dict[str, str]:
    data: dict[str, str] = json.loads((vectors / "c2sp" / "signed-note-example.json").read_text())
    return data


def test_c2sp_example_note_verifies(example: dict[str, str]) -> None:
    verifier = Verifier.from_vkey(example["verifier_key"])
    note, verified = open_note(example["note"].encode(), [verifier])
    assert note.text == example["want_text"]
    assert verified == (verifier,)
    assert verifier.vkey == example["verifier_key"]
    assert note.to_bytes() == example["note"].encode()


def test_any_flipped_byte_of_the_example_fails(example: dict[str, str]) -> None:
    verifier = Verifier.from_vkey(example["verifier_key"])
    data = example["note"].encode()
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises((MalformedError, VerificationError)):
            open_note(bytes(bad), [verifier])


def test_key_id_follows_the_spec(example: dict[str, str]) -> None:
    verifier = Verifier.from_vkey(example["verifier_key"])
    assert key_id(verifier.name, verifier.public_key) == 0x530D903A


def test_signer_round_trips_and_signs_verifiable_notes() -> None:
    signer = Signer.generate("audit.example/log")
    again = Signer.from_private_key(signer.private_key)
    assert again.verifier == signer.verifier
    assert signer.private_key.startswith("PRIVATE+KEY+audit.example/log+")
    note = sign_note("hello\n\nworld\n", [signer])
    parsed, verified = open_note(note, [Verifier.from_vkey(signer.verifier.vkey)])
    assert parsed.text == "hello\n\nworld\n"
    assert verified == (signer.verifier,)


def test_unknown_signatures_are_ignored_but_a_bad_known_one_rejects() -> None:
    log, other = Signer.generate("log.example"), Signer.generate("other.example")
    note = sign_note("text\n", [other, log])
    _, verified = open_note(note, [log.verifier])
    assert verified == (log.verifier,)
    with pytest.raises(VerificationError, match="not signed by any trusted key"):
        open_note(note, [Signer.generate("log.example").verifier])
    parsed = Note.parse(note)
    forged = Note(
        parsed.text,
        (parsed.signatures[0], parsed.signatures[0].__class__(log.name, log.key_id, bytes(64))),
    )
    with pytest.raises(VerificationError, match="bad signature"):
        open_note(forged.to_bytes(), [log.verifier])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"no blank line\n\xe2\x80\x94 a AAAA\n", "blank line"),
        (b"text\n\n", "no signatures"),
        (b"text\n\nnot a signature\n", "em dash"),
        (b"text\n\n\xe2\x80\x94 a+b AAAAAAAA\n", "invalid key name"),
        (b"text\n\n\xe2\x80\x94 a AAAA\n", "too short"),
        (b"text\n\n\xe2\x80\x94 a AAAAAAB=\n", "base64"),
        (b"text\n\n\xe2\x80\x94 a AAAA*AAA\n", "base64"),
        (b"te\x01xt\n\n\xe2\x80\x94 a AAAAAAAA\n", "control character"),
        (b"\xff\n\n\xe2\x80\x94 a AAAAAAAA\n", "UTF-8"),
        (b"text\n\n\xe2\x80\x94 a AAAAAAAA", "newline"),
    ],
)
def test_malformed_notes_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(MalformedError, match=message):
        Note.parse(data)


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "example.com/foo+530d903a",
        "example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/fox+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",
        "PRIVATE+KEY+x+00000000+AA==",
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(MalformedError):
        Verifier.from_vkey(vkey)


def test_checkpoint_text_is_byte_exact_to_the_spec_example() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = Checkpoint.from_text(text)
    assert checkpoint.origin == "example.com/behind-the-sofa"
    assert checkpoint.size == 20852163
    assert checkpoint.text() == text


@pytest.mark.parametrize(
    "text",
    [
        "origin\n5\n",
        "origin\n05\n" + "A" * 43 + "=\n",
        "origin\n-5\n" + "A" * 43 + "=\n",
        "origin\n5\nAAAA\n",
        "origin\n5\n" + "A" * 43 + "=",
        "origin\n5\n" + "A" * 43 + "=\n\n",
        "\n5\n" + "A" * 43 + "=\n",
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(MalformedError):
        Checkpoint.from_text(text)


def test_signed_checkpoint_round_trip_and_origin_check() -> None:
    signer = Signer.generate("log.example/a")
    checkpoint = Checkpoint("log.example/a", 3, bytes(range(32)), ("ext line",))
    signed = sign_checkpoint(checkpoint, [signer])
    assert open_checkpoint(signed, [signer.verifier], origin="log.example/a") == checkpoint
    with pytest.raises(VerificationError, match="expected"):
        open_checkpoint(signed, [signer.verifier], origin="log.example/b")


def _receipt(extra: bytes | None = None) -> tuple[TlogProof, list[bytes], Signer]:
    entries = [f"entry {i}".encode() for i in range(11)]
    store = MemoryHashStore(leaf_hash(e) for e in entries)
    signer = Signer.generate("log.example/a")
    signed = sign_checkpoint(Checkpoint("log.example/a", 11, store.root()), [signer])
    proof = TlogProof(7, tuple(inclusion_proof(store, 7, 11)), signed, extra)
    return proof, entries, signer


def test_tlog_proof_round_trip_and_verification() -> None:
    for extra in (None, b"context"):
        proof, entries, signer = _receipt(extra)
        data = proof.to_bytes()
        assert data.startswith(b"c2sp.org/tlog-proof@v1\n")
        assert TlogProof.parse(data) == proof
        checkpoint = verify_tlog_proof(data, entries[7], [signer.verifier], origin="log.example/a")
        assert checkpoint.size == 11
        with pytest.raises(VerificationError):
            verify_tlog_proof(data, entries[6], [signer.verifier])
        with pytest.raises(VerificationError):
            verify_tlog_proof(data, entries[7], [Signer.generate("log.example/a").verifier])


def test_tlog_proof_with_no_hashes() -> None:
    signer = Signer.generate("log.example/a")
    signed = sign_checkpoint(Checkpoint("log.example/a", 1, leaf_hash(b"only")), [signer])
    data = TlogProof(0, (), signed).to_bytes()
    assert data.startswith(b"c2sp.org/tlog-proof@v1\nindex 0\n\n")
    verify_tlog_proof(data, b"only", [signer.verifier])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d.replace(b"@v1", b"@v2", 1),
        lambda d: d.replace(b"index 7", b"index 07", 1),
        lambda d: d.replace(b"index 7", b"idx 7", 1),
        lambda d: d.replace(b"\n\n", b"\n", 1),
        lambda d: d.split(b"\n\n", 1)[0] + b"\n\n",
        lambda d: d.replace(b"=\n", b"=x\n", 1),
        lambda d: b"garbage",
    ],
)
def test_garbage_tlog_proofs_are_refused(mangle: object) -> None:
    proof, entries, signer = _receipt()
    bad = mangle(proof.to_bytes())  # type: ignore[operator]
    with pytest.raises((MalformedError, VerificationError)):
        verify_tlog_proof(bad, entries[7], [signer.verifier])


def test_keys_round_trip_whatever_their_base64_contains() -> None:
    # Base64 uses '+', which is also the vkey field separator.
    for _ in range(300):
        signer = Signer.generate("log.example/a")
        assert Verifier.from_vkey(signer.verifier.vkey) == signer.verifier
        assert Signer.from_private_key(signer.private_key).verifier == signer.verifier
