"""The ``local`` provider's KEK ring: a current KEK, previous KEKs, and rotation between them.

What a platform engineer relies on: a KEK staged in the source is used for new keys at
once (no restart), keys under the previous KEK keep unwrapping until they are rewrapped,
no key is left under a KEK about to be dropped, and once the previous KEK is dropped it
opens nothing. KEK files (``REGSANDBOX_LOCAL_KEK_FILE`` + the previous-KEK file) here;
the Secret ring on the real API server below and, with the operator running, in
test_rotate_kek.py.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client

from sandbox.keys import (
    FileKekRing,
    FileWrappedKeyStore,
    KekRing,
    KeyIntegrityError,
    KeyProviderError,
    LocalKeyProvider,
    RewrappedKey,
    SecretKekRing,
    generate_kek,
    kek_id,
)
from sandbox.keys.kek_ring import KEK_LABEL
from sandbox.kube.apply import apply, list_objects

REGION = "onprem:lu-national-1"


def _write(path: Path, kek: bytes | None) -> None:
    path.write_text("" if kek is None else base64.b64encode(kek).decode() + "\n")


def _sid() -> str:
    return f"sbx-t-{secrets.token_hex(4)}"


def test_file_ring_rotation_without_restart_then_the_old_kek_opens_nothing(
    tmp_path: Path,
) -> None:
    current, previous = tmp_path / "kek", tmp_path / "previous-kek"
    old, new = generate_kek(), generate_kek()
    _write(current, old)  # the previous-KEK file does not exist yet: no previous KEK
    store = FileWrappedKeyStore(tmp_path / "wrapped")
    operator = LocalKeyProvider.from_source(FileKekRing(current, previous), store)
    before = [operator.create(_sid(), REGION, {}).sandbox_id for _ in range(3)]
    keys = {sid: operator.data_key(sid) for sid in before}

    # Stage: the store behind the files now serves the new KEK, and the old as previous.
    _write(current, new)
    _write(previous, old)
    during = operator.create(_sid(), REGION, {}).sandbox_id  # no restart: under the new KEK
    assert LocalKeyProvider(new, store).data_key(during) == operator.data_key(during)
    assert all(operator.data_key(sid) == keys[sid] for sid in before)  # old keys still open

    seen: list[RewrappedKey] = []
    rotation = LocalKeyProvider.from_source(FileKekRing(current, previous), store).rewrap_all(
        seen.append
    )
    assert (rotation.rewrapped, rotation.already_current, rotation.failed) == (3, 1, ())
    assert sorted(k.sandbox_id for k in seen) == sorted(before)
    assert {(k.old_kek_id, k.new_kek_id) for k in seen} == {(kek_id(old), kek_id(new))}
    assert operator.under_previous() == []

    _write(previous, None)  # drop the previous KEK
    operator.refresh()
    assert operator.kek_ids == (kek_id(new),)
    assert all(operator.data_key(sid) == keys[sid] for sid in before)
    for sid in [*before, during]:
        with pytest.raises(KeyIntegrityError):
            LocalKeyProvider(old, store).data_key(sid)


class _StagingStore(FileWrappedKeyStore):
    """Runs ``before_put`` once, just before a new key is stored."""

    before_put: object = None

    def put(self, sandbox_id: str, blob: bytes, *, replace: bool = False) -> bytes:
        hook, self.before_put = self.before_put, None
        if callable(hook):
            hook()
        return super().put(sandbox_id, blob, replace=replace)


def test_a_key_wrapped_before_staging_and_stored_after_the_listing_is_rewrapped(
    tmp_path: Path,
) -> None:
    """The operator wrapped a new key under the old KEK; before it stored it, the KEK was
    staged and the rotation (another process) listed and rewrapped every stored key. The
    operator must not leave that key under the KEK about to be dropped."""
    current, previous = tmp_path / "kek", tmp_path / "previous-kek"
    old, new = generate_kek(), generate_kek()
    _write(current, old)
    store = _StagingStore(tmp_path / "wrapped")
    operator = LocalKeyProvider.from_source(FileKekRing(current, previous), store)
    rotating = LocalKeyProvider.from_source(FileKekRing(current, previous), store)

    def stage_and_rotate() -> None:
        _write(current, new)
        _write(previous, old)
        assert rotating.rewrap_all().failed == ()

    store.before_put = stage_and_rotate
    sid = operator.create(_sid(), REGION, {}).sandbox_id
    assert rotating.under_previous() == []
    key = operator.data_key(sid)
    _write(previous, None)
    assert LocalKeyProvider.from_source(FileKekRing(current, previous), store).data_key(sid) == key


class _GatedRing:
    """A KEK source whose first read blocks until the test opens the gate."""

    def __init__(self, current: Path, previous: Path) -> None:
        self.files = FileKekRing(current, previous)
        self.reads = 0
        self.entered = threading.Event()
        self.gate = threading.Event()

    def load(self) -> KekRing:
        self.reads += 1
        ring = self.files.load()  # what this read sees is fixed when it begins
        if self.reads == 2:  # the first read after the provider was made
            self.entered.set()
            assert self.gate.wait(20)
        return ring


def _waiting_in_refresh(thread: threading.Thread) -> bool:
    """Whether ``thread`` has entered :meth:`LocalKeyProvider.refresh` and taken its ticket."""
    frame = sys._current_frames().get(thread.ident or -1)
    while frame is not None:
        if frame.f_code.co_name == "refresh" and "ticket" in frame.f_locals:
            return True
        frame = frame.f_back
    return False


def test_ring_reads_are_shared_but_never_older_than_the_call(tmp_path: Path) -> None:
    """In a burst of new keys the ring is read once per round trip, not twice per key;
    yet a call made after a KEK was staged never gets a ring read before the staging
    (a key wrapped under it could be left under a KEK about to be dropped)."""
    current, previous = tmp_path / "kek", tmp_path / "previous-kek"
    old, new = generate_kek(), generate_kek()
    _write(current, old)
    source = _GatedRing(current, previous)
    operator = LocalKeyProvider.from_source(source, FileWrappedKeyStore(tmp_path / "w"))
    early = threading.Thread(target=operator.refresh)
    early.start()
    assert source.entered.wait(20)  # a read under way, begun before the staging
    _write(current, new)
    _write(previous, old)
    late = [threading.Thread(target=operator.refresh) for _ in range(8)]
    for thread in late:
        thread.start()
    deadline = time.monotonic() + 20
    while not all(_waiting_in_refresh(t) or not t.is_alive() for t in late):
        assert time.monotonic() < deadline, "the refreshes did not start"
        time.sleep(0.01)
    source.gate.set()
    for thread in [early, *late]:
        thread.join(20)
    # The early read, then one read shared by all eight calls made after the staging.
    assert source.reads == 3
    assert operator.kek_id == kek_id(new)
    assert operator.kek_ids == (kek_id(old), kek_id(new))


def test_previous_kek_file_errors_name_the_file_not_the_content(tmp_path: Path) -> None:
    current, previous = tmp_path / "kek", tmp_path / "previous-kek"
    _write(current, generate_kek())
    previous.write_text("not base64 at all: s3cr3t-material\n")
    with pytest.raises(KeyProviderError) as caught:
        FileKekRing(current, previous).load()
    assert str(previous) in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> str:
    name = f"keys-{secrets.token_hex(4)}"
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.mark.integration
def test_secret_ring_stages_one_generation_under_a_race_and_drops_the_previous(
    admin_api: client.ApiClient, namespace: str
) -> None:
    ring = SecretKekRing(admin_api, namespace)
    first = ring.load()  # made on first use, as the operator's first start does
    assert first.previous == ()
    with ThreadPoolExecutor(max_workers=4) as pool:
        staged = list(pool.map(lambda _: ring.stage(after=first.current_id), range(4)))
    assert {r.current for r in staged} == {staged[0].current}  # one new KEK, not four
    assert staged[0].previous == (first.current,)
    found = list_objects(admin_api, "Secret", namespace, KEK_LABEL)
    assert sorted(s["metadata"]["name"] for s in found) == ["regsandbox-kek", "regsandbox-kek-g1"]
    # A rotation staged after another run verified its keys is not dropped by that run.
    later = ring.stage(after=staged[0].current_id)
    assert ring.drop_previous(verified=staged[0].current_id) == [first.current_id]
    after = ring.load()
    assert (after.current, after.previous) == (later.current, (staged[0].current,))
    with pytest.raises(KeyProviderError, match="dropped meanwhile"):
        ring.stage(after=first.current_id)


def test_the_keys_command_refuses_a_data_key_rotation_without_confirmation() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "operators.main", "keys", "rotate-data-key", "sbx-a-b"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert "--yes" in run.stderr
    assert run.stdout == ""


def test_a_previous_kek_file_without_a_kek_file_is_refused_at_start(tmp_path: Path) -> None:
    from operators.settings import OperatorSettings

    with pytest.raises(ValueError, match="LOCAL_PREVIOUS_KEK_FILE"):
        OperatorSettings(
            cluster_region="onprem:lu-national-1",
            cluster_jurisdiction="LU",
            local_previous_kek_file=tmp_path / "previous-kek",
        )
