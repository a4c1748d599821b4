"""Key rotation: KEK rotation without downtime, crash-safe on a real token; data-key rotation.

The properties come from what key custody needs (issue #17): rotating the KEK re-wraps
every live data key while the operator keeps working; a key destroyed meanwhile stays
destroyed; a process killed between the steps of a pkcs11 rotation leaves each stored
data key openable by exactly one live token key, and calling again finishes the job.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pkcs11 import Attribute, ObjectClass

from sandbox.keys import (
    FileWrappedKeyStore,
    KeyNotFoundError,
    LocalKeyProvider,
    MemoryWrappedKeyStore,
    Pkcs11KeyProvider,
    generate_kek,
    kek_id,
)
from sandbox.keys.pkcs11 import kek_label
from tests.keys.conftest import SoftHsm

REGION = "eu-west-1"
TAGS = {"regsandbox.io/tenant": "acme-bank"}
WAIT = 30.0
"""Upper bound for a call that must not be blocked (it normally takes milliseconds)."""


class PausingStore(MemoryWrappedKeyStore):
    """A memory store whose ``swap`` for one sandbox waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.pause_for: str | None = None
        self.paused = threading.Event()
        self.resume = threading.Event()

    def swap(self, sandbox_id: str, expected: bytes, blob: bytes) -> bool:
        if sandbox_id == self.pause_for:
            self.paused.set()
            assert self.resume.wait(WAIT)
        return super().swap(sandbox_id, expected, blob)


def _sid(prefix: str = "rot") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- local ---------------------------------------------------------------------------------


def test_local_kek_rotation_does_not_stop_other_sandboxes(tmp_path: Path) -> None:
    """While one key is being rewrapped, creates, reads and destroys of others proceed."""
    store = PausingStore()
    kek = generate_kek()
    provider = LocalKeyProvider(kek, store)
    held = provider.create("held", REGION, TAGS).sandbox_id
    other = provider.create("other", REGION, TAGS).sandbox_id
    other_key = provider.data_key(other)
    store.pause_for = held
    new_kek = generate_kek()
    with ThreadPoolExecutor(max_workers=2) as pool:
        rotation = pool.submit(provider.rotate_kek, new_kek)
        assert store.paused.wait(WAIT)
        # The rotation is mid-way; the rest of the operator keeps working.
        fresh = pool.submit(provider.create, "fresh", REGION, TAGS).result(timeout=WAIT)
        assert provider.data_key(other) == other_key
        assert provider.destroy(other).outcome == "destroyed"
        store.resume.set()
        done = rotation.result(timeout=WAIT)
    assert done.new_kek_id == kek_id(new_kek)
    only_new = LocalKeyProvider(new_kek, store)
    assert only_new.get(other) is None  # destroyed during the rotation: stays destroyed
    for sid in (held, fresh.sandbox_id):
        assert len(only_new.data_key(sid)) == 32  # opens with the new KEK alone


def test_local_kek_rotation_under_concurrent_create_and_destroy() -> None:
    """8 threads create and destroy sandboxes while the KEK rotates; afterwards every live
    key opens under the new KEK alone with its data key unchanged, and none came back."""
    store = MemoryWrappedKeyStore()
    kek, new_kek = generate_kek(), generate_kek()
    provider = LocalKeyProvider(kek, store, lock_stripes=4)
    before = dict.fromkeys(_sid("pre") for _ in range(40))
    for sid in before:
        provider.create(sid, REGION, TAGS)
    keys = {sid: provider.data_key(sid) for sid in before}
    doomed = list(keys)[:20]
    created: list[str] = []
    start = threading.Barrier(9)

    def churn(index: int) -> None:
        start.wait(WAIT)
        for round_ in range(10):
            sid = f"new-{index}-{round_}"
            provider.create(sid, REGION, TAGS)
            created.append(sid)
        for sid in doomed[index::8]:
            provider.destroy(sid)

    with ThreadPoolExecutor(max_workers=9) as pool:
        workers = [pool.submit(churn, i) for i in range(8)]
        start.wait(WAIT)
        provider.rotate_kek(new_kek)
        for worker in workers:
            worker.result(timeout=WAIT)
    only_new = LocalKeyProvider(new_kek, store)
    assert sorted(store.ids()) == sorted([*(s for s in keys if s not in doomed), *created])
    for sid in doomed:
        assert only_new.get(sid) is None
        with pytest.raises(KeyNotFoundError):
            only_new.data_key(sid)
    for sid, key in keys.items():
        if sid not in doomed:
            assert only_new.data_key(sid) == key
    for sid in created:
        assert len(only_new.data_key(sid)) == 32


def test_local_rotation_racing_a_destroy_in_another_process_does_not_revive_the_key(
    tmp_path: Path,
) -> None:
    """A platform engineer's rotation and the operator's destroy share only the store."""
    store = PausingStore()
    kek = generate_kek()
    rotating, operator = LocalKeyProvider(kek, store), LocalKeyProvider(kek, store)
    sid = operator.create(_sid(), REGION, TAGS).sandbox_id
    store.pause_for = sid
    with ThreadPoolExecutor(max_workers=1) as pool:
        rotation = pool.submit(rotating.rotate_kek, generate_kek())
        assert store.paused.wait(WAIT)  # the rewrapped key is about to be written
        assert operator.destroy(sid).outcome == "destroyed"
        store.resume.set()
        assert rotation.result(timeout=WAIT).rewrapped == 0
    assert store.get(sid) is None


def test_local_data_key_rotation_gives_a_new_key_and_shreds_the_old(tmp_path: Path) -> None:
    store = FileWrappedKeyStore(tmp_path / "keys")
    provider = LocalKeyProvider(generate_kek(), store)
    sid = _sid()
    old = provider.create(sid, REGION, TAGS)
    old_key = provider.data_key(sid)
    new = provider.rotate_data_key(sid)
    assert new.key_id != old.key_id
    assert (new.sandbox_id, new.region) == (sid, REGION)
    assert provider.get(sid) == new
    assert provider.data_key(sid) != old_key
    assert old.key_id.encode() not in (store.get(sid) or b"")
    with pytest.raises(KeyNotFoundError):
        provider.rotate_data_key(_sid("never"))


# --- pkcs11 --------------------------------------------------------------------------------


def _token_objects(softhsm: SoftHsm, sandbox_id: str) -> list[bytes]:
    """``CKA_ID`` of the sandbox's token keys, asked of the token in a session of our own."""
    with softhsm.session() as session:
        found = session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: kek_label(sandbox_id)}
        )
        return sorted(bytes(obj[Attribute.ID]) for obj in found)


def _record_kek(store: FileWrappedKeyStore, sandbox_id: str) -> bytes:
    document: dict[str, Any] = json.loads(store.get(sandbox_id) or b"{}")
    return bytes.fromhex(document.get("kekObjectId") or document["keyId"].removeprefix("pkcs11-"))


def test_pkcs11_kek_rotation_rewraps_inside_the_token_and_destroys_the_old_kek(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    store = FileWrappedKeyStore(tmp_path / "wrapped")
    provider = Pkcs11KeyProvider(softhsm.settings(), store)
    sids = [_sid("hsm") for _ in range(3)]
    refs = {sid: provider.create(sid, REGION, TAGS) for sid in sids}
    keys = {sid: provider.data_key(sid) for sid in sids}
    old_keks = {sid: _token_objects(softhsm, sid) for sid in sids}
    old_copies = {sid: store.get(sid) for sid in sids}

    rotation = provider.rotate_kek()
    assert rotation.rotated >= len(sids)
    again = provider.rotate_kek(made_before=rotation.made_before)
    assert again.rotated == 0  # resumable: nothing left to do
    for sid in sids:
        now = _token_objects(softhsm, sid)
        assert len(now) == 1  # one KEK ...
        assert now != old_keks[sid]  # ... a new one
        assert _record_kek(store, sid) == now[0]
        assert provider.get(sid) == refs[sid]  # the key id (status, StorageClass) stays
        assert provider.data_key(sid) == keys[sid]  # the data key (volumes) stays
        # The superseded wrapped copy (an etcd revision) has no KEK left to open it.
        store.put(sid, old_copies[sid] or b"", replace=True)
        with pytest.raises(KeyNotFoundError):
            provider.data_key(sid)


_ROTATE = """
import sys
from pydantic import SecretStr
from sandbox.keys import FileWrappedKeyStore, Pkcs11KeyProvider, Pkcs11Settings
settings = Pkcs11Settings(module=sys.argv[1], token_label=sys.argv[2], pin=SecretStr(sys.argv[3]))
Pkcs11KeyProvider(settings, FileWrappedKeyStore(sys.argv[4])).rotate_kek()
"""


def test_pkcs11_rotation_killed_after_the_swap_leaves_one_kek_per_key_and_resumes(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    """SIGKILL between storing the rewrapped key and destroying the old KEK."""
    directory = tmp_path / "wrapped"
    store = FileWrappedKeyStore(directory)
    settings = softhsm.settings()
    provider = Pkcs11KeyProvider(settings, store)
    sid = provider.create(_sid("hsm"), REGION, TAGS).sandbox_id
    key = provider.data_key(sid)
    started = dt.datetime.now(dt.UTC)
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            _ROTATE,
            str(settings.module),
            settings.token_label,
            settings.pin.get_secret_value(),
            str(directory),
        ],
        env={
            **os.environ,
            "REGSANDBOX_TEST_KILL_AT": "pkcs11-after-swap",
        },
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    objects = _token_objects(softhsm, sid)
    assert len(objects) == 2  # the old KEK survived the kill ...
    stored_under = _record_kek(store, sid)
    assert stored_under in objects  # ... but the stored key names the new one only
    assert provider.data_key(sid) == key
    resumed = provider.rotate_kek(made_before=started)  # resume: the leftover KEK goes
    assert (resumed.rotated, resumed.already_current) == (0, 1)
    assert _token_objects(softhsm, sid) == [stored_under]
    assert provider.data_key(sid) == key


def test_pkcs11_data_key_rotation_destroys_the_old_token_key(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    store = FileWrappedKeyStore(tmp_path / "wrapped")
    provider = Pkcs11KeyProvider(softhsm.settings(), store)
    sid = _sid("hsm")
    old = provider.create(sid, REGION, TAGS)
    old_key, old_copy = provider.data_key(sid), store.get(sid)
    new = provider.rotate_data_key(sid)
    assert new.key_id != old.key_id
    assert _token_objects(softhsm, sid) == [bytes.fromhex(new.key_id.removeprefix("pkcs11-"))]
    assert provider.data_key(sid) != old_key
    store.put(sid, old_copy or b"", replace=True)
    with pytest.raises(KeyNotFoundError):
        provider.data_key(sid)


def test_local_kek_rotation_skips_and_reports_an_unreadable_record() -> None:
    """One altered record must not leave every other key under the old KEK."""
    store = MemoryWrappedKeyStore()
    kek, new_kek = generate_kek(), generate_kek()
    provider = LocalKeyProvider(kek, store)
    good = provider.create(_sid(), REGION, TAGS).sandbox_id
    key = provider.data_key(good)
    store.put("altered", b"{not a record", replace=True)
    rotation = provider.rotate_kek(new_kek)
    assert rotation.failed == ("altered",)
    assert rotation.rewrapped == 1
    assert LocalKeyProvider(new_kek, store).data_key(good) == key
    assert store.get("altered") == b"{not a record"


_CREATE = """
import sys
from pydantic import SecretStr
from sandbox.keys import FileWrappedKeyStore, Pkcs11KeyProvider, Pkcs11Settings
settings = Pkcs11Settings(module=sys.argv[1], token_label=sys.argv[2], pin=SecretStr(sys.argv[3]))
Pkcs11KeyProvider(settings, FileWrappedKeyStore(sys.argv[4])).create(sys.argv[5], "eu-west-1", {})
"""


def test_pkcs11_create_killed_after_the_token_key_is_made_ends_with_one_key(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    """SIGKILL between C_GenerateKey and storing the wrapped key: the next create (after
    the restart) adopts that token key; the sandbox never gets a second one."""
    directory = tmp_path / "wrapped"
    settings = softhsm.settings()
    sid = _sid("hsm")
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            _CREATE,
            str(settings.module),
            settings.token_label,
            settings.pin.get_secret_value(),
            str(directory),
            sid,
        ],
        env={**os.environ, "REGSANDBOX_TEST_KILL_AT": "pkcs11-after-generate"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    store = FileWrappedKeyStore(directory)
    made = _token_objects(softhsm, sid)
    assert len(made) == 1  # the token key exists ...
    assert store.get(sid) is None  # ... its wrapped data key was never stored
    ref = Pkcs11KeyProvider(settings, store).create(sid, REGION, TAGS)
    assert ref.key_id == f"pkcs11-{made[0].hex()}"
    assert _token_objects(softhsm, sid) == made
    assert len(Pkcs11KeyProvider(settings, store).data_key(sid)) == 32


class _RacingStore(FileWrappedKeyStore):
    """Runs ``before_swap`` once, just before a swap: another process's call lands there."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.before_swap: Any = None

    def swap(self, sandbox_id: str, expected: bytes, blob: bytes) -> bool:
        hook, self.before_swap = self.before_swap, None
        if hook is not None:
            hook()
        return super().swap(sandbox_id, expected, blob)


def test_pkcs11_rotation_in_another_process_survives_the_operators_create(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    """A `keys rotate-kek` Job rotates while the operator (another process: its own
    locks) reconciles the sandbox: the operator's create lands between the rotation's
    new token key and its swap. It must not take the new key for a crash leftover and
    destroy it, and the operator keeps unwrapping the key after the rotation, though it
    cached the stored key from before."""
    store = _RacingStore(tmp_path / "wrapped")
    rotating = Pkcs11KeyProvider(softhsm.settings(), store)
    operator = Pkcs11KeyProvider(softhsm.settings(), store)
    sid = operator.create(_sid("hsm"), REGION, TAGS).sandbox_id
    key, old_kek = operator.data_key(sid), _token_objects(softhsm, sid)
    store.before_swap = lambda: operator.create(sid, REGION, TAGS)
    rotation = rotating.rotate_kek()
    assert rotation.failed == ()
    assert [k.sandbox_id for k in rotation.keys] == [sid]
    new_kek = _token_objects(softhsm, sid)
    assert len(new_kek) == 1
    assert new_kek != old_kek  # rotated: one token key, the new one ...
    assert _record_kek(store, sid) == new_kek[0]  # ... named by the stored key
    assert operator.data_key(sid) == key
    assert operator.get(sid) is not None


def test_pkcs11_kek_rotation_under_concurrent_create_and_destroy(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    """4 threads create and destroy sandboxes while every KEK rotates: afterwards each
    live sandbox has exactly one token key, the one its stored key names, its data key is
    unchanged, and no destroyed sandbox has a token key or a stored key."""
    store = FileWrappedKeyStore(tmp_path / "wrapped")
    provider = Pkcs11KeyProvider(softhsm.settings(), store, lock_stripes=4)
    before = [_sid("pre") for _ in range(12)]
    for sid in before:
        provider.create(sid, REGION, TAGS)
    keys = {sid: provider.data_key(sid) for sid in before}
    doomed = before[:6]
    created: list[str] = []
    start = threading.Barrier(5)

    def churn(index: int) -> None:
        start.wait(WAIT)
        for round_ in range(4):
            sid = _sid(f"new{index}{round_}")
            provider.create(sid, REGION, TAGS)
            created.append(sid)
        for sid in doomed[index::4]:
            provider.destroy(sid)

    with ThreadPoolExecutor(max_workers=5) as pool:
        workers = [pool.submit(churn, i) for i in range(4)]
        start.wait(WAIT)
        rotation = provider.rotate_kek()
        for worker in workers:
            worker.result(timeout=120)
    assert rotation.failed == ()
    for sid in doomed:
        assert _token_objects(softhsm, sid) == []
        assert store.get(sid) is None
    for sid in [*before[6:], *created]:
        objects = _token_objects(softhsm, sid)
        assert objects == [_record_kek(store, sid)], sid
    for sid in before[6:]:
        assert provider.data_key(sid) == keys[sid]
