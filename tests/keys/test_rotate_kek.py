"""``sandbox-operator keys rotate-kek`` beside a live operator, on the real control plane.

Issue #17: "rotating the KEK re-wraps every live data key without downtime". The operator
runs (chart RBAC) with the ``local`` provider and its KEK ring in Secrets; the rotation
runs as the command a platform engineer runs in a Job, as a separate process. It is
SIGKILLed after its first rewrap (``REGSANDBOX_TEST_KILL_AT=kek-after-rewrap``); while
the ring stands half-rotated the operator keeps provisioning; the command is run again
and finishes. Then every key unwraps (with the data key it had), the old KEK's Secret is
gone, the old KEK alone unwraps none of the keys, and each rewrap is in the audit log
with ids only.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from audit.log import AuditLog, LogReader
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.operator_process import OperatorProcess
from sandbox.keys import (
    FileKekRing,
    KeyIntegrityError,
    LocalKeyProvider,
    Pkcs11KeyProvider,
    SecretKekRing,
    generate_kek,
    kek_id,
)
from sandbox.keys.kek_ring import KEK_LABEL
from sandbox.keys.secret_store import SecretWrappedKeyStore
from sandbox.kube.apply import apply, delete, get, list_objects
from tests.keys.conftest import TOKEN_LABEL, USER_PIN, SoftHsm
from tests.lifecycle.conftest import operator_env
from tests.lifecycle.helpers import SYSTEM_NS, condition, sandbox_body, unique

pytestmark = pytest.mark.integration

WRAPPED = "regsandbox.io/key=wrapped-data-key"
ORIGIN = "regsandbox.test/keys-cli"


def _audit_log(tmp_path: Path) -> tuple[Path, Path]:
    """A log of its own for the command: the operator holds the session log's lock (in a
    cluster, both write to the audit service)."""
    key = tmp_path / "cli-signing.key"
    AuditLog.create(tmp_path / "cli-log", ORIGIN, generate_key_file(key, ORIGIN)).close()
    return tmp_path / "cli-log", key


def _rotate(
    kubeconfig: Path, audit: tuple[Path, Path], *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "operators.main", "keys", "rotate-kek", *args],
        env={
            **os.environ,
            **operator_env(audit),
            "REGSANDBOX_KUBECONFIG": str(kubeconfig),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _records(api: client.ApiClient) -> dict[str, dict[str, Any]]:
    """Every wrapped key in the operator's namespace, by sandbox id (metadata only)."""
    found = {}
    for secret in list_objects(api, "Secret", SYSTEM_NS, WRAPPED):
        record = json.loads(base64.b64decode(secret["data"]["value"]))
        found[record["sandboxId"]] = record
    return found


def _ready(api: client.ApiClient, name: str, home: str) -> Callable[[], bool]:
    def check() -> bool:
        cond = condition(get(api, "Sandbox", name, home), "Ready")
        return bool(cond and cond["status"] == "True")

    return check


def _volume_key(api: client.ApiClient, sid: str) -> bytes:
    """The data key the operator handed the sandbox's storage (its volume passphrase)."""
    secret = get(api, "Secret", "regsandbox-volume-key", sid)
    assert secret is not None, sid
    passphrase = base64.b64decode(secret["data"]["CRYPTO_KEY_VALUE"])
    return base64.b64decode(passphrase)


def test_kek_rotation_beside_a_live_operator_is_resumable_and_retires_the_old_kek(
    admin_api: client.ApiClient,
    operator_kubeconfig: Path,
    start_operator: Callable[..., OperatorProcess],
    tenant_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    operator = start_operator(REGSANDBOX_KEY_PROVIDER="local")
    tenant = tenant_factory()
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 60, "the home namespace")
    store = SecretWrappedKeyStore(admin_api, SYSTEM_NS, cache_seconds=0)
    ring = SecretKekRing(admin_api, SYSTEM_NS)
    names: list[str] = []

    def provision(count: int) -> list[str]:
        made = [unique("rot") for _ in range(count)]
        for name in made:
            apply(admin_api, sandbox_body(name, tenant))
        for name in made:
            operator.wait_until(_ready(admin_api, name, home), 120, f"{name} to be Ready")
        names.extend(made)
        return [f"sbx-{tenant}-{name}" for name in made]

    try:
        before = provision(3)
        old_kek = ring.load().current
        reader = LocalKeyProvider(old_kek, store)
        data_keys = {sid: reader.data_key(sid) for sid in before}
        assert all(_volume_key(admin_api, sid) == data_keys[sid] for sid in before)

        audit = _audit_log(tmp_path)
        killed = _rotate(operator_kubeconfig, audit, REGSANDBOX_TEST_KILL_AT="kek-after-rewrap")
        assert killed.returncode == -9, killed.stderr[-2000:]
        half = ring.load()
        assert half.previous == (old_kek,)  # staged: a new current KEK, the old one kept
        new_id = half.current_id
        # One rewrap, then -9 (other tests' live sandboxes share the namespace: count all).
        assert [r["kekId"] for r in _records(admin_api).values()].count(new_id) == 1

        # No downtime: the operator provisions while the ring is half-rotated, under the
        # new KEK at once (it re-reads the ring before it wraps: no restart).
        during = provision(2)
        assert all(_records(admin_api)[sid]["kekId"] == new_id for sid in during)

        resumed = _rotate(operator_kubeconfig, audit)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert f"kek/{kek_id(old_kek)} deleted" in resumed.stdout

        # The ring is the new KEK alone; every live key is wrapped under it.
        secrets = list_objects(admin_api, "Secret", SYSTEM_NS, KEK_LABEL)
        assert [kek_id(base64.b64decode(s["data"]["value"])) for s in secrets] == [new_id]
        records = _records(admin_api)
        live = [*before, *during]
        assert {records[sid]["kekId"] for sid in live} == {new_id}
        # Every key unwraps to the data key it had; the storage still holds that key.
        fresh = LocalKeyProvider.from_source(ring, store)
        assert {sid: fresh.data_key(sid) for sid in before} == data_keys
        assert all(_volume_key(admin_api, sid) == fresh.data_key(sid) for sid in live)
        _old_kek_opens_nothing(old_kek, store, live)

        # The operator dropped the old KEK too and keeps working: a new sandbox is made,
        # the others stay Ready.
        after = provision(1)
        assert _records(admin_api)[after[0]]["kekId"] == new_id
        assert [n for n in names if not _ready(admin_api, n, home)()] == []

        _check_audit(audit[0], before, records, old_kek, new_id, fresh.data_key(before[0]))
    finally:
        for name in names:
            delete(admin_api, "Sandbox", name, home)
        for name in names:
            operator.wait_until(
                lambda name=name: get(admin_api, "Sandbox", name, home) is None, 120, "teardown"
            )


def _check_audit(
    log: Path,
    rewrapped: list[str],
    records: dict[str, dict[str, Any]],
    old_kek: bytes,
    new_id: str,
    data_key: bytes,
) -> None:
    """One key.rotated per rewrapped key across both runs, one kek.retired; ids only."""
    reader = LogReader(log)
    try:
        entries = [reader.entry(i) for i in range(reader.size)]
        raw = b"".join(reader.entry_bytes(i) for i in range(reader.size))
    finally:
        reader.close()
    rotated = [e for e in entries if e.action == "key.rotated"]
    sandboxes = [e.resource.sandbox or "" for e in rotated]
    assert len(sandboxes) == len(set(sandboxes))  # each key once, across the two runs
    assert set(rewrapped) <= set(sandboxes)  # (and other tests' live keys, if any)
    for entry in rotated:
        assert entry.details["provider"] == "local"
        assert entry.details["oldKekId"] == kek_id(old_kek)
        assert entry.details["newKekId"] == new_id
        record = records.get(entry.resource.sandbox or "")
        assert record is None or entry.details["keyId"] == record["keyId"]
    assert [e.action for e in entries].count("kek.retired") == 1
    for secret in (old_kek, data_key):
        assert base64.b64encode(secret) not in raw
        assert secret.hex().encode() not in raw


def _old_kek_opens_nothing(old_kek: bytes, store: SecretWrappedKeyStore, sids: list[str]) -> None:
    for sid in sids:
        with pytest.raises(KeyIntegrityError):
            LocalKeyProvider(old_kek, store).data_key(sid)


def _fresh_namespace(api: client.ApiClient) -> str:
    name = f"keys-{secrets.token_hex(4)}"
    apply(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def test_pkcs11_rotate_kek_command_gives_every_sandbox_a_new_token_key(
    admin_api: client.ApiClient,
    control_plane: ControlPlane,
    softhsm: SoftHsm,
    tmp_path: Path,
) -> None:
    """The same command with pkcs11: each live sandbox's token KEK is replaced (the data
    key stays), and each replacement is audited with the old and new token objects."""
    namespace = _fresh_namespace(admin_api)
    store = SecretWrappedKeyStore(admin_api, namespace, cache_seconds=0)
    operator = Pkcs11KeyProvider(softhsm.settings(), store)
    sids = [f"sbx-cli-{secrets.token_hex(3)}" for _ in range(2)]
    refs = {sid: operator.create(sid, "lu-national-1", {}) for sid in sids}
    keys = {sid: operator.data_key(sid) for sid in sids}
    pin = tmp_path / "pin"
    pin.write_text(USER_PIN + "\n")
    audit = _audit_log(tmp_path)
    run = _rotate(
        control_plane.admin_kubeconfig,
        audit,
        REGSANDBOX_NAMESPACE=namespace,
        REGSANDBOX_KEY_PROVIDER="pkcs11",
        REGSANDBOX_PKCS11_MODULE=str(softhsm.module),
        REGSANDBOX_PKCS11_TOKEN_LABEL=TOKEN_LABEL,
        REGSANDBOX_PKCS11_PIN_FILE=str(pin),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "2 rotated" in run.stdout
    reader = LogReader(audit[0])
    try:
        rotated = [reader.entry(i) for i in range(reader.size)]
    finally:
        reader.close()
    assert sorted(e.resource.sandbox or "" for e in rotated) == sorted(sids)
    for entry in rotated:
        sid = entry.resource.sandbox or ""
        record = json.loads(store.get(sid) or b"{}")
        assert entry.action == "key.rotated"
        assert entry.details["provider"] == "pkcs11"
        assert entry.details["keyId"] == refs[sid].key_id  # the data key's id stays
        assert entry.details["newKekId"] == f"pkcs11-kek-{record['kekObjectId']}"
        assert entry.details["oldKekId"] != entry.details["newKekId"]
        assert operator.data_key(sid) == keys[sid]  # the operator's cached copy follows


def test_file_kek_rotate_command_rewraps_and_says_to_empty_the_previous_file(
    admin_api: client.ApiClient, control_plane: ControlPlane, tmp_path: Path
) -> None:
    namespace = _fresh_namespace(admin_api)
    current, previous = tmp_path / "kek", tmp_path / "previous-kek"
    old, new = generate_kek(), generate_kek()
    current.write_text(base64.b64encode(old).decode())
    store = SecretWrappedKeyStore(admin_api, namespace, cache_seconds=0)
    operator = LocalKeyProvider.from_source(FileKekRing(current, previous), store)
    sid = operator.create(f"sbx-cli-{secrets.token_hex(3)}", "lu-national-1", {}).sandbox_id
    key = operator.data_key(sid)
    current.write_text(base64.b64encode(new).decode())  # the secret store rotated the files
    previous.write_text(base64.b64encode(old).decode())
    env = {
        "REGSANDBOX_NAMESPACE": namespace,
        "REGSANDBOX_LOCAL_KEK_FILE": str(current),
        "REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE": str(previous),
    }
    run = _rotate(control_plane.admin_kubeconfig, _audit_log(tmp_path), **env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE" in run.stdout
    assert list_objects(admin_api, "Secret", namespace, KEK_LABEL) == []  # never in etcd
    previous.write_text("")
    assert operator.data_key(sid) == key
    _old_kek_opens_nothing(old, store, [sid])


def test_rotate_data_key_command_gives_a_new_key_and_audits_both_ids(
    admin_api: client.ApiClient, control_plane: ControlPlane, tmp_path: Path
) -> None:
    namespace = _fresh_namespace(admin_api)
    store = SecretWrappedKeyStore(admin_api, namespace, cache_seconds=0)
    operator = LocalKeyProvider.from_source(SecretKekRing(admin_api, namespace), store)
    sid = f"sbx-cli-{secrets.token_hex(3)}"
    old = operator.create(sid, "lu-national-1", {})
    old_key = operator.data_key(sid)
    audit = _audit_log(tmp_path)
    run = subprocess.run(
        [sys.executable, "-m", "operators.main", "keys", "rotate-data-key", sid, "--yes"],
        env={
            **os.environ,
            **operator_env(audit),
            "REGSANDBOX_KUBECONFIG": str(control_plane.admin_kubeconfig),
            "REGSANDBOX_NAMESPACE": namespace,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    new = operator.get(sid)
    assert new is not None
    assert new.key_id != old.key_id
    assert operator.data_key(sid) != old_key  # the old data key is shredded, not kept
    assert f"key/{new.key_id} rotated" in run.stdout
    reader = LogReader(audit[0])
    try:
        [entry] = [reader.entry(i) for i in range(reader.size)]
    finally:
        reader.close()
    assert (entry.action, entry.resource.sandbox) == ("key.rotated", sid)
    assert entry.details["scope"] == "data-key"
    assert (entry.details["oldKeyId"], entry.details["newKeyId"]) == (old.key_id, new.key_id)
