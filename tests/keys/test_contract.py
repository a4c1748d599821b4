"""The key-provider contract: every provider passes the same tests (issue #17).

``local`` (file store), ``aws-kms`` (moto's HTTP server) and ``pkcs11`` (a real SoftHSM2
token) are each driven through create, get, wrap/unwrap, destroy, destroy twice,
destroy of an unknown key, concurrent use from many threads, and an unavailable backend
that must fail closed. "Restart" means a new provider object over the same backend.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from sandbox.keys import (
    AwsKmsKeyProvider,
    AwsKmsSettings,
    FileWrappedKeyStore,
    KeyNotFoundError,
    KeyProvider,
    KeyProviderUnavailable,
    KeyRef,
    LocalKeyProvider,
    Pkcs11KeyProvider,
    generate_kek,
)
from tests.keys.conftest import SoftHsm

REGION = "eu-west-1"
TAGS = {"regsandbox.io/tenant": "acme-bank"}


@dataclass
class Backend:
    """One provider under test, with what the contract needs to check it from outside."""

    name: str
    restart: Callable[[], KeyProvider]
    """A new provider over the same backend (an operator restart)."""
    data_key_roundtrip: Callable[[KeyProvider, KeyRef], tuple[bytes, bytes]]
    """Wrap a data key under the sandbox's key and unwrap it again: (wrapped, plaintext)."""
    unwrap_fails: Callable[[KeyProvider, KeyRef, bytes], None]
    """Assert that the data key (given its wrapped form) can no longer be unwrapped."""
    unavailable: Callable[[], KeyProvider]
    """A provider whose backend cannot be reached."""
    unavailable_errors: tuple[type[BaseException], ...]
    evidence: Callable[[KeyRef], list[str]]
    """What the destruction confirmation must name, asked of the backend independently."""
    racing_destroys_agree: bool = True
    """Of two racing destroys exactly one reports the destruction. KMS does (the loser's
    ScheduleKeyDeletion is refused as KMSInvalidStateException); moto does not refuse it."""


def _local(tmp_path: Path) -> Backend:
    kek = generate_kek()
    directory = tmp_path / "local-keys"

    def restart() -> KeyProvider:
        return LocalKeyProvider(kek, FileWrappedKeyStore(directory))

    def roundtrip(provider: KeyProvider, ref: KeyRef) -> tuple[bytes, bytes]:
        assert isinstance(provider, LocalKeyProvider)
        wrapped = (directory / f"{ref.sandbox_id}.key").read_bytes()
        return wrapped, provider.data_key(ref.sandbox_id)

    def unwrap_fails(provider: KeyProvider, ref: KeyRef, wrapped: bytes) -> None:
        assert isinstance(provider, LocalKeyProvider)
        with pytest.raises(KeyNotFoundError):
            provider.data_key(ref.sandbox_id)

    def unavailable() -> KeyProvider:
        blocked = tmp_path / "local-unreachable"
        blocked.mkdir()
        store = FileWrappedKeyStore(blocked)
        blocked.rmdir()
        blocked.write_text("not a directory")  # the store's volume is gone
        return LocalKeyProvider(kek, store)

    # The local provider passes its store's errors through (an OSError here, an
    # ApiException from the Secret store); either way no key is handed out.
    def evidence(ref: KeyRef) -> list[str]:
        path = directory / f"{ref.sandbox_id}.key"
        assert not path.exists()
        return [str(path), "no such file"]

    return Backend("local", restart, roundtrip, unwrap_fails, unavailable, (OSError,), evidence)


def _kms(endpoint: str) -> Backend:
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    client = session.client("kms", region_name=REGION, endpoint_url=endpoint)

    def restart() -> KeyProvider:
        settings = AwsKmsSettings(regions=(REGION,), endpoint_url=endpoint)
        return AwsKmsKeyProvider(settings, session=session)

    def roundtrip(provider: KeyProvider, ref: KeyRef) -> tuple[bytes, bytes]:
        made = client.generate_data_key(KeyId=ref.key_id, KeySpec="AES_256")
        again = client.decrypt(CiphertextBlob=made["CiphertextBlob"], KeyId=ref.key_id)
        assert again["Plaintext"] == made["Plaintext"]
        return made["CiphertextBlob"], again["Plaintext"]

    def unwrap_fails(provider: KeyProvider, ref: KeyRef, wrapped: bytes) -> None:
        # KMS refuses Decrypt under a key pending deletion (KMSInvalidStateException);
        # moto does not enforce that, so check the state KMS decides it from.
        metadata = client.describe_key(KeyId=ref.key_id)["KeyMetadata"]
        assert metadata["KeyState"] == "PendingDeletion"
        assert metadata.get("DeletionDate") is not None
        with pytest.raises(ClientError, match="NotFoundException"):
            client.describe_key(KeyId=f"alias/regsandbox/{ref.sandbox_id}")

    def unavailable() -> KeyProvider:
        settings = AwsKmsSettings(
            regions=(REGION,),
            endpoint_url="http://127.0.0.1:9",  # discard port: nothing listens
            connect_timeout=0.5,
            read_timeout=0.5,
            max_attempts=1,
        )
        return AwsKmsKeyProvider(settings, session=session)

    def evidence(ref: KeyRef) -> list[str]:
        metadata = client.describe_key(KeyId=ref.key_id)["KeyMetadata"]
        assert metadata["KeyState"] == "PendingDeletion"
        return [ref.key_id, "KeyState=PendingDeletion", metadata["DeletionDate"].isoformat()]

    return Backend(
        "aws-kms",
        restart,
        roundtrip,
        unwrap_fails,
        unavailable,
        (KeyProviderUnavailable,),
        evidence,
        racing_destroys_agree=False,
    )


def _pkcs11(softhsm: SoftHsm, tmp_path: Path) -> Backend:
    directory = tmp_path / "pkcs11-wrapped"

    def restart() -> KeyProvider:
        return Pkcs11KeyProvider(softhsm.settings(), FileWrappedKeyStore(directory))

    def roundtrip(provider: KeyProvider, ref: KeyRef) -> tuple[bytes, bytes]:
        assert isinstance(provider, Pkcs11KeyProvider)
        wrapped = (directory / f"{ref.sandbox_id}.key").read_bytes()
        return wrapped, provider.data_key(ref.sandbox_id)

    def unwrap_fails(provider: KeyProvider, ref: KeyRef, wrapped: bytes) -> None:
        assert isinstance(provider, Pkcs11KeyProvider)
        # Even with the old wrapped key put back (an etcd revision, a backup), the token
        # has no key to unwrap it with.
        (directory / f"{ref.sandbox_id}.key").write_bytes(wrapped)
        with pytest.raises(KeyNotFoundError):
            provider.data_key(ref.sandbox_id)
        assert provider.get(ref.sandbox_id) is None

    def unavailable() -> KeyProvider:
        absent = softhsm.settings(token_label="regsandbox-absent")
        return Pkcs11KeyProvider(absent, FileWrappedKeyStore(directory))

    def evidence(ref: KeyRef) -> list[str]:
        return [ref.key_id, "C_FindObjects", softhsm.settings().token_label]

    return Backend(
        "pkcs11", restart, roundtrip, unwrap_fails, unavailable, (KeyProviderUnavailable,), evidence
    )


@pytest.fixture(params=["local", "aws-kms", "pkcs11"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each provider in turn."""
    if request.param == "local":
        return _local(tmp_path)
    if request.param == "aws-kms":
        return _kms(request.getfixturevalue("moto_kms_endpoint"))
    return _pkcs11(request.getfixturevalue("softhsm"), tmp_path)


@pytest.fixture
def provider(backend: Backend) -> KeyProvider:
    return backend.restart()


def _sandbox(prefix: str = "contract") -> str:
    """A sandbox id unique to the call (the KMS server and the token are shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_is_a_key_provider(backend: Backend, provider: KeyProvider) -> None:
    assert isinstance(provider, KeyProvider)
    assert provider.name == backend.name


def test_create_then_get_returns_the_same_key(backend: Backend, provider: KeyProvider) -> None:
    sid = _sandbox()
    ref = provider.create(sid, REGION, TAGS)
    assert (ref.sandbox_id, ref.provider, ref.region) == (sid, backend.name, REGION)
    assert ref.created_at.tzinfo is not None
    assert provider.get(sid) == ref
    assert backend.restart().get(sid) == ref


def test_create_is_idempotent_across_restarts(backend: Backend, provider: KeyProvider) -> None:
    sid = _sandbox()
    first = provider.create(sid, REGION, TAGS)
    assert provider.create(sid, REGION, TAGS) == first
    assert backend.restart().create(sid, REGION, TAGS) == first


def test_each_sandbox_gets_its_own_key(provider: KeyProvider) -> None:
    one, two = provider.create(_sandbox(), REGION, TAGS), provider.create(_sandbox(), REGION, TAGS)
    assert one.key_id != two.key_id


def test_get_of_an_unknown_sandbox_is_none(provider: KeyProvider) -> None:
    assert provider.get(_sandbox("never")) is None


def test_wrap_and_unwrap_a_data_key(backend: Backend, provider: KeyProvider) -> None:
    ref = provider.create(_sandbox(), REGION, TAGS)
    wrapped, plaintext = backend.data_key_roundtrip(provider, ref)
    assert len(plaintext) == 32
    assert plaintext not in wrapped
    # After a restart the same wrapped key unwraps to the same data key.
    _, again = backend.data_key_roundtrip(backend.restart(), ref)
    if backend.name != "aws-kms":  # KMS makes a new data key per GenerateDataKey
        assert again == plaintext


def test_destroy_makes_the_data_key_unrecoverable(backend: Backend, provider: KeyProvider) -> None:
    sid = _sandbox()
    ref = provider.create(sid, REGION, TAGS)
    wrapped, _ = backend.data_key_roundtrip(provider, ref)
    destruction = provider.destroy(sid)
    assert destruction.provider == backend.name
    assert destruction.key_id == ref.key_id
    assert destruction.outcome in ("destroyed", "scheduled")
    assert not destruction.already_done
    assert provider.get(sid) is None
    assert backend.restart().get(sid) is None
    backend.unwrap_fails(provider, ref, wrapped)


def test_destroy_carries_the_providers_own_confirmation(
    backend: Backend, provider: KeyProvider
) -> None:
    """The key.destroyed audit entry needs evidence from the provider, not an assumption."""
    sid = _sandbox()
    ref = provider.create(sid, REGION, TAGS)
    destruction = provider.destroy(sid)
    assert destruction.confirmation, f"{backend.name} gave no confirmation"
    for expected in backend.evidence(ref):
        assert expected in destruction.confirmation, (expected, destruction.confirmation)
    if backend.name == "aws-kms":
        metadata_date = backend.evidence(ref)[2]
        assert destruction.deletion_date is not None
        assert destruction.deletion_date.isoformat() == metadata_date
    # A repeated destroy still says what it checked.
    assert provider.destroy(sid).confirmation


def test_destroy_twice_reports_the_second_as_already_done(provider: KeyProvider) -> None:
    sid = _sandbox()
    provider.create(sid, REGION, TAGS)
    provider.destroy(sid)
    second = provider.destroy(sid)
    assert second.already_done
    assert second.outcome in ("absent", "already-scheduled")
    assert provider.get(sid) is None


def test_destroy_of_an_unknown_key_succeeds_as_absent(
    backend: Backend, provider: KeyProvider
) -> None:
    destruction = provider.destroy(_sandbox("never"))
    assert destruction.outcome == "absent"
    assert destruction.already_done
    assert destruction.provider == backend.name


def test_concurrent_use_from_many_threads(backend: Backend, provider: KeyProvider) -> None:
    """16 threads: 4 race to create each of 6 sandboxes; all agree on one key per sandbox."""
    sandboxes = [_sandbox("threads") for _ in range(6)]
    work = [sid for sid in sandboxes for _ in range(4)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        created = list(pool.map(lambda sid: provider.create(sid, REGION, TAGS), work))
    for sid in sandboxes:
        keys = {ref.key_id for ref in created if ref.sandbox_id == sid}
        assert len(keys) == 1, f"{sid} got {len(keys)} keys"
    restarted = backend.restart()
    with ThreadPoolExecutor(max_workers=16) as pool:
        seen = list(pool.map(restarted.get, sandboxes))
        destroyed = list(pool.map(provider.destroy, sandboxes + sandboxes))
    assert [ref.key_id if ref else None for ref in seen] == [
        next(ref.key_id for ref in created if ref.sandbox_id == sid) for sid in sandboxes
    ]
    for sid in sandboxes:
        outcomes = sorted(d.outcome for d in destroyed if d.sandbox_id == sid)
        reported = sum(not d.already_done for d in destroyed if d.sandbox_id == sid)
        assert reported == 1 if backend.racing_destroys_agree else reported >= 1, outcomes
        assert provider.get(sid) is None


def test_unavailable_backend_fails_closed(backend: Backend) -> None:
    down = backend.unavailable()
    sid = _sandbox("down")
    with pytest.raises(backend.unavailable_errors):
        down.create(sid, REGION, TAGS)
    with pytest.raises(backend.unavailable_errors):
        down.get(sid)
    with pytest.raises(backend.unavailable_errors):
        down.destroy(sid)
    # Nothing was made behind the caller's back on the reachable backend either.
    assert backend.restart().get(sid) is None
