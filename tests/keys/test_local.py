"""The local key provider: wrapped data keys, AAD binding, crypto-shredding, KEK rotation."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sandbox.errors import SandboxError
from sandbox.keys import (
    FileWrappedKeyStore,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProvider,
    KeyProviderError,
    KeyStateError,
    LocalKeyProvider,
    MemoryWrappedKeyStore,
    WrappedKeyStore,
    generate_kek,
    kek_id,
)

TAGS = {"regsandbox.io/tenant": "acme-bank"}


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> WrappedKeyStore:
    """Both bundled stores, so each behaviour is checked on each."""
    if request.param == "memory":
        return MemoryWrappedKeyStore()
    return FileWrappedKeyStore(tmp_path / "keys")


@pytest.fixture
def kek() -> bytes:
    return generate_kek()


@pytest.fixture
def provider(kek: bytes, store: WrappedKeyStore) -> LocalKeyProvider:
    return LocalKeyProvider(kek, store)


def _secret_forms(data_key: bytes) -> list[str]:
    """Ways a leaked data key could appear in text."""
    return [data_key.hex(), base64.b64encode(data_key).decode(), repr(data_key)[2:-1]]


# --- interface and round trip -------------------------------------------------------------


def test_is_a_key_provider(provider: LocalKeyProvider) -> None:
    assert isinstance(provider, KeyProvider)
    assert provider.name == "local"


def test_create_then_data_key_round_trips_through_a_fresh_provider(
    kek: bytes, store: WrappedKeyStore
) -> None:
    first = LocalKeyProvider(kek, store)
    ref = first.create("acme-claims", "eu-west-1", TAGS)
    data_key = first.data_key("acme-claims")
    assert len(data_key) == 32

    restarted = LocalKeyProvider(kek, store)  # nothing cached: must unwrap from the store
    assert restarted.data_key("acme-claims") == data_key
    assert restarted.get("acme-claims") == ref
    assert ref.provider == "local"
    assert ref.region == "eu-west-1"
    assert ref.key_id.startswith("local-")


def test_stored_blob_holds_no_plaintext_key(
    provider: LocalKeyProvider, store: WrappedKeyStore
) -> None:
    provider.create("acme-claims", "eu-west-1", TAGS)
    blob = store.get("acme-claims")
    assert blob is not None
    data_key = provider.data_key("acme-claims")
    assert data_key not in blob
    for form in _secret_forms(data_key):
        assert form.encode() not in blob


def test_create_is_idempotent(provider: LocalKeyProvider, store: WrappedKeyStore) -> None:
    first = provider.create("acme-claims", "eu-west-1", TAGS)
    key = provider.data_key("acme-claims")
    second = provider.create("acme-claims", "eu-west-1", TAGS)
    assert second == first
    assert provider.data_key("acme-claims") == key
    assert store.ids() == ["acme-claims"]


def test_create_after_crash_returns_the_stored_key(kek: bytes, store: WrappedKeyStore) -> None:
    ref = LocalKeyProvider(kek, store).create("acme-claims", "eu-west-1", TAGS)
    assert LocalKeyProvider(kek, store).create("acme-claims", "eu-west-1", TAGS) == ref


def test_racing_creators_agree_on_one_key(kek: bytes, store: WrappedKeyStore) -> None:
    """A second operator that lost the create-if-absent race adopts the stored key."""
    one, two = LocalKeyProvider(kek, store), LocalKeyProvider(kek, store)
    ref = one.create("acme-claims", "eu-west-1", TAGS)
    assert two.create("acme-claims", "eu-west-1", TAGS) == ref
    assert two.data_key("acme-claims") == one.data_key("acme-claims")


def test_create_in_another_region_is_refused(provider: LocalKeyProvider) -> None:
    provider.create("acme-claims", "eu-west-1", TAGS)
    with pytest.raises(KeyStateError, match="eu-west-1"):
        provider.create("acme-claims", "eu-central-1", TAGS)


def test_each_sandbox_gets_its_own_key(provider: LocalKeyProvider) -> None:
    a = provider.create("acme-a", "eu-west-1", TAGS)
    b = provider.create("acme-b", "eu-west-1", TAGS)
    assert a.key_id != b.key_id
    assert provider.data_key("acme-a") != provider.data_key("acme-b")


@pytest.mark.parametrize("bad", ["", "Acme", "acme_claims", "-acme", "a/b", "x" * 201])
def test_invalid_sandbox_ids_are_refused(provider: LocalKeyProvider, bad: str) -> None:
    with pytest.raises(KeyProviderError, match="invalid sandbox id"):
        provider.create(bad, "eu-west-1", TAGS)


# --- AAD binding --------------------------------------------------------------------------


def test_wrapped_key_moved_to_another_sandbox_does_not_unwrap(
    provider: LocalKeyProvider, store: WrappedKeyStore
) -> None:
    provider.create("acme-a", "eu-west-1", TAGS)
    blob = store.get("acme-a")
    assert blob is not None
    store.put("acme-b", blob)
    with pytest.raises(KeyIntegrityError, match="moved"):
        provider.data_key("acme-b")


def test_relabelled_wrapped_key_fails_authentication(kek: bytes, store: WrappedKeyStore) -> None:
    """Rewriting the record's sandbox id to match its new slot still fails: the AAD binds it."""
    LocalKeyProvider(kek, store).create("acme-a", "eu-west-1", TAGS)
    blob = store.get("acme-a")
    assert blob is not None
    document = json.loads(blob)
    document["sandboxId"] = "acme-b"
    store.put("acme-b", json.dumps(document).encode())
    with pytest.raises(KeyIntegrityError, match="failed authentication"):
        LocalKeyProvider(kek, store).data_key("acme-b")


def test_tampered_ciphertext_fails_authentication(kek: bytes, store: WrappedKeyStore) -> None:
    LocalKeyProvider(kek, store).create("acme-a", "eu-west-1", TAGS)
    blob = store.get("acme-a")
    assert blob is not None
    document = json.loads(blob)
    wrapped = bytearray(base64.b64decode(document["wrapped"]))
    wrapped[0] ^= 0x01
    document["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    store.put("acme-a", json.dumps(document).encode(), replace=True)
    with pytest.raises(KeyIntegrityError, match="failed authentication"):
        LocalKeyProvider(kek, store).data_key("acme-a")


def test_unreadable_record_is_reported_without_its_content(
    provider: LocalKeyProvider, store: WrappedKeyStore
) -> None:
    store.put("acme-a", b"not json at all")
    with pytest.raises(KeyIntegrityError, match="unreadable") as caught:
        provider.data_key("acme-a")
    assert "not json" not in str(caught.value)


# --- destroy ------------------------------------------------------------------------------


def test_destroy_makes_the_data_key_unrecoverable(kek: bytes, store: WrappedKeyStore) -> None:
    provider = LocalKeyProvider(kek, store)
    ref = provider.create("acme-claims", "eu-west-1", TAGS)
    provider.data_key("acme-claims")  # populate the cache

    result = provider.destroy("acme-claims")
    assert result.outcome == "destroyed"
    assert result.key_id == ref.key_id
    assert not result.already_done
    assert store.get("acme-claims") is None
    assert provider.get("acme-claims") is None
    with pytest.raises(KeyNotFoundError):
        provider.data_key("acme-claims")
    with pytest.raises(KeyNotFoundError):  # a restarted operator cannot recover it either
        LocalKeyProvider(kek, store).data_key("acme-claims")


def test_destroy_overwrites_the_cached_plaintext(provider: LocalKeyProvider) -> None:
    provider.create("acme-claims", "eu-west-1", TAGS)
    provider.data_key("acme-claims")
    cached = provider._cache["acme-claims"][1]  # the buffer itself, to see it zeroed
    provider.destroy("acme-claims")
    assert cached == bytearray(32)
    assert "acme-claims" not in provider._cache


def test_destroy_is_idempotent(provider: LocalKeyProvider) -> None:
    provider.create("acme-claims", "eu-west-1", TAGS)
    assert provider.destroy("acme-claims").outcome == "destroyed"
    again = provider.destroy("acme-claims")
    assert again.outcome == "absent"
    assert again.already_done


def test_destroy_of_a_never_created_key_succeeds(provider: LocalKeyProvider) -> None:
    result = provider.destroy("acme-never")
    assert result.outcome == "absent"
    assert result.key_id is None


def test_destroy_removes_an_unreadable_record(
    provider: LocalKeyProvider, store: WrappedKeyStore
) -> None:
    store.put("acme-a", b"garbage")
    assert provider.destroy("acme-a").outcome == "destroyed"
    assert store.get("acme-a") is None


def test_destroy_by_another_process_is_seen(kek: bytes, store: WrappedKeyStore) -> None:
    """A cached key is not served once the wrapped key is gone from the store."""
    one = LocalKeyProvider(kek, store)
    one.create("acme-claims", "eu-west-1", TAGS)
    one.data_key("acme-claims")
    LocalKeyProvider(kek, store).destroy("acme-claims")
    with pytest.raises(KeyNotFoundError):
        one.data_key("acme-claims")


# --- KEK ----------------------------------------------------------------------------------


def test_wrong_kek_fails_clearly(kek: bytes, store: WrappedKeyStore) -> None:
    LocalKeyProvider(kek, store).create("acme-claims", "eu-west-1", TAGS)
    other = generate_kek()
    with pytest.raises(KeyIntegrityError) as caught:
        LocalKeyProvider(other, store).data_key("acme-claims")
    message = str(caught.value)
    assert kek_id(kek) in message
    assert kek_id(other) in message
    assert "configure the KEK" in message


@pytest.mark.parametrize("bad", [b"", b"short", bytes(31), bytes(33)])
def test_kek_must_be_32_bytes(store: WrappedKeyStore, bad: bytes) -> None:
    with pytest.raises(KeyProviderError, match="32 bytes"):
        LocalKeyProvider(bad, store)


def test_kek_rotation_rewraps_every_key(kek: bytes, store: WrappedKeyStore) -> None:
    provider = LocalKeyProvider(kek, store)
    provider.create("acme-a", "eu-west-1", TAGS)
    provider.create("acme-b", "eu-west-1", TAGS)
    keys = {sid: provider.data_key(sid) for sid in ("acme-a", "acme-b")}
    refs = {sid: provider.get(sid) for sid in keys}

    new_kek = generate_kek()
    rotation = provider.rotate_kek(new_kek)
    assert rotation.rewrapped == 2
    assert rotation.old_kek_id == kek_id(kek)
    assert rotation.new_kek_id == kek_id(new_kek) == provider.kek_id

    rotated = LocalKeyProvider(new_kek, store)  # only the new KEK
    for sid, key in keys.items():
        assert rotated.data_key(sid) == key
        assert rotated.get(sid) == refs[sid]
    with pytest.raises(KeyIntegrityError):
        LocalKeyProvider(kek, store).data_key("acme-a")  # the old KEK no longer opens them


def test_interrupted_rotation_resumes(kek: bytes, store: WrappedKeyStore) -> None:
    provider = LocalKeyProvider(kek, store)
    provider.create("acme-a", "eu-west-1", TAGS)
    provider.create("acme-b", "eu-west-1", TAGS)
    keys = {sid: provider.data_key(sid) for sid in ("acme-a", "acme-b")}
    new_kek = generate_kek()

    # Simulate a crash after one key was rewrapped.
    partial = LocalKeyProvider(kek, MemoryWrappedKeyStore())
    partial._keks[kek_id(new_kek)] = new_kek
    record = partial._wrap(
        sandbox_id="acme-a",
        key_id=provider.get("acme-a").key_id,  # type: ignore[union-attr]
        region="eu-west-1",
        created_at=provider.get("acme-a").created_at,  # type: ignore[union-attr]
        tags=TAGS,
        data_key=keys["acme-a"],
        kek=new_kek,
    )
    store.put("acme-a", record.to_bytes(), replace=True)

    restarted = LocalKeyProvider(new_kek, store, previous_keks=[kek])
    assert restarted.data_key("acme-b") == keys["acme-b"]  # still under the old KEK
    rotation = restarted.rotate_kek(new_kek)
    assert (rotation.rewrapped, rotation.already_current) == (1, 1)
    final = LocalKeyProvider(new_kek, store)
    assert {sid: final.data_key(sid) for sid in keys} == keys


# --- nothing secret in reprs, errors or logs ----------------------------------------------


def test_reprs_and_logs_hold_no_key_material(kek: bytes, store: WrappedKeyStore) -> None:
    with capture_logs() as logs:
        provider = LocalKeyProvider(kek, store)
        ref = provider.create("acme-claims", "eu-west-1", TAGS)
        data_key = provider.data_key("acme-claims")
        provider.rotate_kek(generate_kek())
        destruction = provider.destroy("acme-claims")
    texts = [repr(ref), str(ref), repr(provider), repr(store), repr(destruction), repr(logs)]
    for text in texts:
        for secret in (*_secret_forms(data_key), *_secret_forms(kek)):
            assert secret not in text
    assert repr(ref).startswith("KeyRef(sandbox_id='acme-claims', key_id='local-")
    assert {entry["event"] for entry in logs} >= {"key.created", "key.destroyed", "kek.rotated"}


def test_errors_belong_to_the_sandbox_error_tree() -> None:
    assert issubclass(KeyIntegrityError, SandboxError)
    assert issubclass(KeyNotFoundError, KeyProviderError)


def test_file_store_writes_private_files(tmp_path: Path, kek: bytes) -> None:
    store = FileWrappedKeyStore(tmp_path / "keys")
    LocalKeyProvider(kek, store).create("acme-claims", "eu-west-1", TAGS)
    path = tmp_path / "keys" / "acme-claims.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.ids() == ["acme-claims"]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]
