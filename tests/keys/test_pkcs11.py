"""The pkcs11 key provider against a real SoftHSM2 token: custody properties an HSM must keep.

The contract shared with the other providers is in test_contract.py; here are the
properties only a token can show: where the key lives, that it cannot leave, that
destruction removes the token object, and that a missing key is never silently replaced.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11
from pydantic import SecretStr
from structlog.testing import capture_logs

from sandbox.keys import (
    FileWrappedKeyStore,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProviderError,
    KeyProviderUnavailable,
    KeyStateError,
    Pkcs11KeyProvider,
    Pkcs11Settings,
    read_pin_file,
)
from sandbox.keys.pkcs11 import kek_label
from tests.keys.conftest import (
    OTHER_TOKEN_LABEL,
    PIN_TOKEN_LABEL,
    TOKEN_LABEL,
    USER_PIN,
    SoftHsm,
)

REGION = "eu-west-1"
TAGS = {"regsandbox.io/tenant": "acme-bank"}


@pytest.fixture
def store(tmp_path: Path) -> FileWrappedKeyStore:
    return FileWrappedKeyStore(tmp_path / "wrapped")


@pytest.fixture
def provider(softhsm: SoftHsm, store: FileWrappedKeyStore) -> Pkcs11KeyProvider:
    return Pkcs11KeyProvider(softhsm.settings(), store)


@pytest.fixture
def sid() -> str:
    return f"hsm-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def token_session(softhsm: SoftHsm) -> Iterator[Any]:
    """A logged-in session of the test process on the same token, to look at it without
    the provider (whose own session lives in its worker process)."""
    with softhsm.session() as session:
        yield session


def _objects(session: Any, sandbox_id: str) -> list[Any]:
    return list(
        session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: kek_label(sandbox_id)}
        )
    )


def test_the_kek_is_generated_in_the_token_and_cannot_leave_it(
    provider: Pkcs11KeyProvider, token_session: Any, sid: str
) -> None:
    ref = provider.create(sid, REGION, TAGS)
    (kek,) = _objects(token_session, sid)
    assert ref.key_id == f"pkcs11-{bytes(kek[Attribute.ID]).hex()}"
    assert kek[Attribute.TOKEN] is True
    assert kek[Attribute.PRIVATE] is True
    assert kek[Attribute.SENSITIVE] is True
    assert kek[Attribute.EXTRACTABLE] is False
    assert kek[Attribute.NEVER_EXTRACTABLE] is True
    assert kek[Attribute.ALWAYS_SENSITIVE] is True
    assert kek[Attribute.LOCAL] is True  # generated on the token, never imported
    assert kek[Attribute.ENCRYPT] is False
    assert kek[Attribute.DECRYPT] is False
    assert kek[Attribute.WRAP] is True
    assert kek[Attribute.UNWRAP] is True
    with pytest.raises(p11.AttributeSensitive):
        kek[Attribute.VALUE]
    with pytest.raises(p11.PKCS11Error):  # SoftHSM2: CKR_ATTRIBUTE_READ_ONLY or 0x1b
        kek[Attribute.EXTRACTABLE] = True  # (CKR_ACTION_PROHIBITED)
    other = token_session.generate_key(
        KeyType.AES, 256, store=False, capabilities=MechanismFlag.WRAP
    )
    with pytest.raises(p11.KeyUnextractable):  # not even wrapped under another key
        other.wrap_key(kek, mechanism=Mechanism.AES_KEY_WRAP)


def test_the_stored_record_holds_only_the_wrapped_data_key(
    provider: Pkcs11KeyProvider, store: FileWrappedKeyStore, sid: str
) -> None:
    provider.create(sid, REGION, TAGS)
    data_key = provider.data_key(sid)
    blob = store.get(sid)
    assert blob is not None
    assert data_key not in blob
    assert data_key.hex().encode() not in blob
    assert len(data_key) == 32
    assert provider.data_key(sid) == data_key  # the token unwraps the same key again


def test_destroy_removes_the_token_object_and_reports_the_token_confirmation(
    provider: Pkcs11KeyProvider, token_session: Any, store: FileWrappedKeyStore, sid: str
) -> None:
    ref = provider.create(sid, REGION, TAGS)
    destruction = provider.destroy(sid)
    assert (destruction.provider, destruction.outcome) == ("pkcs11", "destroyed")
    assert destruction.key_id == ref.key_id
    assert destruction.confirmation is not None
    assert "C_FindObjects" in destruction.confirmation
    assert ref.key_id in destruction.confirmation
    # The token itself, asked independently, has no object left for the sandbox.
    assert _objects(token_session, sid) == []
    assert store.get(sid) is None


def test_an_old_copy_of_the_wrapped_key_is_useless_after_destroy(
    provider: Pkcs11KeyProvider, store: FileWrappedKeyStore, sid: str
) -> None:
    """An etcd revision or backup of the wrapped key must not bring the data key back."""
    provider.create(sid, REGION, TAGS)
    old_copy = store.get(sid)
    assert old_copy is not None
    provider.destroy(sid)
    store.put(sid, old_copy)
    with pytest.raises(KeyNotFoundError, match="destroyed"):
        provider.data_key(sid)
    with pytest.raises(KeyStateError, match="finish with destroy"):
        provider.create(sid, REGION, TAGS)  # never a silent new key over an old record
    assert provider.destroy(sid).outcome == "absent"
    assert store.get(sid) is None
    assert provider.create(sid, REGION, TAGS).key_id != ""


def test_a_wrapped_key_moved_to_another_sandbox_does_not_unwrap(
    provider: Pkcs11KeyProvider, store: FileWrappedKeyStore, sid: str
) -> None:
    victim, thief = sid, f"{sid}-thief"
    provider.create(victim, REGION, TAGS)
    provider.create(thief, REGION, TAGS)
    victim_blob, thief_blob = store.get(victim), store.get(thief)
    assert victim_blob is not None
    assert thief_blob is not None
    # Relabel the victim's record as the thief's, keeping the thief's key id: the
    # thief's KEK must refuse to unwrap the victim's data key.
    moved = json.loads(victim_blob)
    moved["sandboxId"] = thief
    moved["keyId"] = json.loads(thief_blob)["keyId"]
    store.put(thief, json.dumps(moved).encode(), replace=True)
    with pytest.raises(KeyIntegrityError, match="failed to unwrap"):
        provider.data_key(thief)
    store.put(thief, victim_blob, replace=True)
    with pytest.raises(KeyIntegrityError, match="belongs to sandbox"):
        provider.data_key(thief)


def test_a_tampered_wrapped_key_fails_authentication(
    provider: Pkcs11KeyProvider, store: FileWrappedKeyStore, sid: str
) -> None:
    provider.create(sid, REGION, TAGS)
    blob = store.get(sid)
    assert blob is not None
    record = json.loads(blob)
    wrapped = bytearray(base64.b64decode(record["wrapped"]))
    wrapped[5] ^= 0x01
    record["wrapped"] = base64.b64encode(bytes(wrapped)).decode()
    store.put(sid, json.dumps(record).encode(), replace=True)
    with pytest.raises(KeyIntegrityError):
        provider.data_key(sid)


def test_a_crash_after_key_generation_is_finished_with_that_key(
    provider: Pkcs11KeyProvider, token_session: Any, store: FileWrappedKeyStore, sid: str
) -> None:
    """The operator died after C_GenerateKey and before storing the wrapped key."""
    orphan = token_session.generate_key(
        KeyType.AES,
        256,
        id=b"\x01" * 16,
        label=kek_label(sid),
        store=True,
        capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP,
        template={Attribute.PRIVATE: True, Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
    )
    ref = provider.create(sid, REGION, TAGS)
    assert ref.key_id == f"pkcs11-{bytes(orphan[Attribute.ID]).hex()}"
    assert len(_objects(token_session, sid)) == 1
    assert len(provider.data_key(sid)) == 32


def test_the_wrong_token_is_refused_not_given_new_keys(
    softhsm: SoftHsm, provider: Pkcs11KeyProvider, store: FileWrappedKeyStore, sid: str
) -> None:
    provider.create(sid, REGION, TAGS)
    elsewhere = Pkcs11KeyProvider(softhsm.settings(token_label=OTHER_TOKEN_LABEL), store)
    assert elsewhere.get(sid) is None
    with pytest.raises(KeyStateError, match="wrong token"):
        elsewhere.create(sid, REGION, TAGS)
    assert provider.data_key(sid)  # the right token still serves it


def test_create_in_another_region_is_refused(provider: Pkcs11KeyProvider, sid: str) -> None:
    provider.create(sid, REGION, TAGS)
    with pytest.raises(KeyStateError, match="region"):
        provider.create(sid, "eu-central-1", TAGS)


def test_a_missing_module_fails_closed(tmp_path: Path, store: FileWrappedKeyStore) -> None:
    settings = Pkcs11Settings(
        module=tmp_path / "no-such-hsm.so", token_label=TOKEN_LABEL, pin=SecretStr(USER_PIN)
    )
    provider = Pkcs11KeyProvider(settings, store)
    with pytest.raises(KeyProviderUnavailable, match=r"no-such-hsm\.so"):
        provider.create("acme-credit", REGION, TAGS)
    assert store.ids() == []


def test_a_wrong_pin_is_a_clear_error_without_the_pin(
    softhsm: SoftHsm, store: FileWrappedKeyStore, sid: str
) -> None:
    wrong = "9999-not-the-pin"
    # A token this process has not logged in to (login state is per process).
    provider = Pkcs11KeyProvider(softhsm.settings(PIN_TOKEN_LABEL, pin=wrong), store)
    with pytest.raises(KeyProviderError, match="refused the PIN") as caught:
        provider.create(sid, REGION, TAGS)
    assert not isinstance(caught.value, KeyProviderUnavailable)
    assert wrong not in str(caught.value)
    assert store.ids() == []
    good = Pkcs11KeyProvider(softhsm.settings(PIN_TOKEN_LABEL), store)
    assert good.get(sid) is None


def test_pin_file_is_read_without_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    path.write_text(f"{USER_PIN}\n")
    assert read_pin_file(path).get_secret_value() == USER_PIN
    path.write_text("\n")
    with pytest.raises(KeyProviderError, match="empty"):
        read_pin_file(path)
    with pytest.raises(KeyProviderError, match="mount the PIN Secret"):
        read_pin_file(tmp_path / "absent")


def test_reprs_and_logs_hold_no_pin_or_key_material(
    softhsm: SoftHsm, provider: Pkcs11KeyProvider, sid: str
) -> None:
    with capture_logs() as logs:
        ref = provider.create(sid, REGION, TAGS)
        data_key = provider.data_key(sid)
        destruction = provider.destroy(sid)
    text = " ".join(
        [repr(provider), repr(softhsm.settings()), repr(ref), repr(destruction), repr(logs)]
    )
    assert USER_PIN not in text
    assert data_key.hex() not in text
    assert [entry["event"] for entry in logs] == ["key.created", "key.destroyed"]


def test_operator_settings_require_the_token_and_pin_file(tmp_path: Path) -> None:
    from kubernetes import client

    from operators.settings import OperatorSettings
    from operators.wiring import key_provider

    base = {"cluster_region": "onprem:lu-national-1", "cluster_jurisdiction": "LU"}
    with pytest.raises(ValueError, match="pkcs11_pin_file"):
        OperatorSettings(**base, key_provider="pkcs11")
    with pytest.raises(ValueError, match="aws-ebs"):
        OperatorSettings(
            **base,
            key_provider="pkcs11",
            pkcs11_module=tmp_path / "hsm.so",
            pkcs11_token_label=TOKEN_LABEL,
            pkcs11_pin_file=tmp_path / "pin",
            storage_profile={"kind": "aws-ebs"},
        )
    pin_file = tmp_path / "pin"
    pin_file.write_text(USER_PIN + "\n")
    settings = OperatorSettings(
        **base,
        key_provider="pkcs11",
        pkcs11_module=tmp_path / "hsm.so",
        pkcs11_token_label=TOKEN_LABEL,
        pkcs11_pin_file=pin_file,
    )
    keys = key_provider(settings, client.ApiClient())  # nothing reaches the token yet
    assert isinstance(keys, Pkcs11KeyProvider)
    assert USER_PIN not in repr(keys)
    with pytest.raises(KeyProviderUnavailable):  # hsm.so does not exist: fail closed
        keys.create("acme-credit", REGION, TAGS)


def test_missing_softhsm_fails_under_ci_and_is_skipped_only_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.keys.conftest import _missing

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="install the Debian package softhsm2"):
        _missing("softhsm2-util is not on PATH")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="softhsm2"):
        _missing("softhsm2-util is not on PATH")


_STAMPEDE = """
import sys, threading
from pathlib import Path
from pydantic import SecretStr
from sandbox.keys import FileWrappedKeyStore, Pkcs11KeyProvider, Pkcs11Settings
settings = Pkcs11Settings(module=sys.argv[1], token_label=sys.argv[2], pin=SecretStr(sys.argv[3]))
provider = Pkcs11KeyProvider(settings, FileWrappedKeyStore(Path(sys.argv[4])))
start = threading.Barrier(16)
made, failed = [], []
def create(i):
    start.wait()
    try:
        made.append(provider.create(f"{sys.argv[5]}-{i:02d}", "lu-national-1", {}).key_id)
    except Exception as exc:
        failed.append(type(exc).__name__)
threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(len(made), sorted(set(failed)))
"""


def test_sixteen_handler_threads_reaching_the_token_first_at_once_share_one_login(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    """An operator starting with many sandboxes: its 16 handler threads all reach the
    token before anyone has logged in. Each used to open (and log in) its own session,
    calling into the module at the same time — which the module, initialised without
    locking, does not survive (PKCS11Error, or a segfault)."""
    settings = softhsm.settings()
    for attempt in range(3):  # a race: give it a few chances to show
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                _STAMPEDE,
                str(settings.module),
                settings.token_label,
                settings.pin.get_secret_value(),
                str(tmp_path / f"wrapped-{attempt}"),
                f"sbx-stampede-{uuid.uuid4().hex[:8]}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr[-2000:]
        assert run.stdout.strip().splitlines()[-1] == "16 []"
