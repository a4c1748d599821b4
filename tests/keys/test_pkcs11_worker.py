"""The ``pkcs11`` provider's worker process, against a real SoftHSM2 token.

Why it exists: the operator embeds regopy, whose ``librego_shared.so`` exports snmalloc's
C++ ``operator new/delete``; with a C++ PKCS#11 module (SoftHSM2) in the same process,
memory the module allocated with glibc was freed into snmalloc and never returned — the
operator grew by ~88 KB per unwrap and ~41 KB per find. Every token call now runs in a
worker process that never loads regopy. These tests hold the worker to what an operator
relies on: the operator's memory stays flat, the worker never maps the policy engine, the
PIN never shows in the worker's command line or environment, and a worker that dies or
hangs fails the call in flight closed (``KeyProviderUnavailable``) and is replaced by the
next call — without losing or duplicating a sandbox's key.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkcs11 import Attribute, ObjectClass

from sandbox.keys import FileWrappedKeyStore, KeyProviderUnavailable, Pkcs11KeyProvider
from sandbox.keys import pkcs11 as provider_module
from sandbox.keys.pkcs11 import kek_label
from sandbox.keys.pkcs11_worker import KILL_AFTER_GENERATE, Token
from tests.keys.conftest import OTHER_TOKEN_LABEL, TOKEN_LABEL, USER_PIN, SoftHsm

REGION = "eu-west-1"
TAGS = {"regsandbox.io/tenant": "acme-bank"}


def _forget_worker(softhsm: SoftHsm, token_label: str) -> None:
    """Stop this process's worker for the token and drop it, so the next call starts a
    fresh one (with the settings and environment of that moment)."""
    key = (str(softhsm.module), token_label)
    with provider_module._CONNECTIONS_LOCK:
        connection = provider_module._CONNECTIONS.pop(key, None)
    if connection is not None:
        connection.close()


def _worker_pid(provider: Pkcs11KeyProvider) -> int:
    pid = provider._connection().worker_pid
    assert pid is not None, "no worker runs"
    return pid


def _kill_and_wait(provider: Pkcs11KeyProvider, sig: int = signal.SIGKILL) -> int:
    """Send ``sig`` to the provider's worker; with SIGKILL, wait (bounded) until it has
    exited entirely — all its threads — as the provider sees it. Returns its pid."""
    process = provider._connection()._process
    assert process is not None
    os.kill(process.pid, sig)
    if sig == signal.SIGKILL:
        for _ in range(1000):
            if process.poll() is not None:
                break
            time.sleep(0.01)
        else:
            raise AssertionError(f"worker {process.pid} is still running")
    return process.pid


def _token_ids(softhsm: SoftHsm, sandbox_id: str) -> list[str]:
    with softhsm.session(OTHER_TOKEN_LABEL) as session:
        found = session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: kek_label(sandbox_id)}
        )
        return sorted(f"pkcs11-{bytes(obj[Attribute.ID]).hex()}" for obj in found)


@pytest.fixture
def sid() -> str:
    return f"wrk-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(tmp_path: Path) -> FileWrappedKeyStore:
    return FileWrappedKeyStore(tmp_path / "wrapped")


@pytest.fixture
def fresh(softhsm: SoftHsm, store: FileWrappedKeyStore) -> Iterator[Pkcs11KeyProvider]:
    """A provider on ``regsandbox-other`` whose worker is started by the test itself."""
    _forget_worker(softhsm, OTHER_TOKEN_LABEL)
    yield Pkcs11KeyProvider(softhsm.settings(OTHER_TOKEN_LABEL), store)
    _forget_worker(softhsm, OTHER_TOKEN_LABEL)


def test_the_worker_never_maps_the_policy_engine(
    softhsm: SoftHsm, fresh: Pkcs11KeyProvider, sid: str
) -> None:
    import regopy  # noqa: F401 - the caller has the policy engine loaded, as the operator does

    assert "librego" in Path("/proc/self/maps").read_text()
    fresh.create(sid, REGION, TAGS)
    assert len(fresh.data_key(sid)) == 32
    maps = Path(f"/proc/{_worker_pid(fresh)}/maps").read_text()
    assert "libsofthsm2" in maps  # it is the process that talks to the token
    assert "librego" not in maps
    assert "regopy" not in maps


def test_the_pin_is_not_in_the_workers_command_line_or_environment(
    softhsm: SoftHsm, fresh: Pkcs11KeyProvider, monkeypatch: pytest.MonkeyPatch, sid: str
) -> None:
    # Whatever the operator's own environment holds (a PIN variable someone added, the
    # operator's settings), the worker gets none of it.
    monkeypatch.setenv("REGSANDBOX_PKCS11_PIN_FILE", "/var/run/secrets/hsm/pin")
    monkeypatch.setenv("HSM_USER_PIN", USER_PIN)
    fresh.create(sid, REGION, TAGS)
    pid = _worker_pid(fresh)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert USER_PIN.encode() not in cmdline
    assert USER_PIN.encode() not in environ
    assert b"REGSANDBOX_PKCS11" not in environ
    assert b"SOFTHSM2_CONF=" in environ  # the module's own configuration passes through


def test_a_worker_killed_between_generate_and_reply_fails_closed_and_keeps_one_key(
    softhsm: SoftHsm,
    fresh: Pkcs11KeyProvider,
    store: FileWrappedKeyStore,
    monkeypatch: pytest.MonkeyPatch,
    sid: str,
) -> None:
    """kill -9 of the worker after C_GenerateKey made the sandbox's KEK, before it
    answered: the call fails closed, nothing is stored, and the retry finishes with that
    very key — one key on the token, never a second."""
    monkeypatch.setenv("REGSANDBOX_TEST_KILL_AT", KILL_AFTER_GENERATE)
    with pytest.raises(KeyProviderUnavailable, match="worker process exited"):
        fresh.create(sid, REGION, TAGS)
    (orphan,) = _token_ids(softhsm, sid)  # the KEK exists; the caller was not told
    assert store.ids() == []
    monkeypatch.delenv("REGSANDBOX_TEST_KILL_AT")
    ref = fresh.create(sid, REGION, TAGS)  # a new worker, started by this call
    assert ref.key_id == orphan
    assert _token_ids(softhsm, sid) == [orphan]
    assert len(fresh.data_key(sid)) == 32
    again = Pkcs11KeyProvider(softhsm.settings(OTHER_TOKEN_LABEL), store)
    assert again.create(sid, REGION, TAGS).key_id == orphan
    assert fresh.destroy(sid).outcome == "destroyed"
    assert _token_ids(softhsm, sid) == []


def test_a_worker_killed_while_idle_is_replaced_by_the_next_call(
    fresh: Pkcs11KeyProvider, sid: str
) -> None:
    ref = fresh.create(sid, REGION, TAGS)
    key = fresh.data_key(sid)
    old = _kill_and_wait(fresh)
    assert fresh.data_key(sid) == key
    assert fresh.get(sid) == ref
    assert _worker_pid(fresh) != old


def test_a_hung_worker_is_killed_and_the_call_fails_closed(
    softhsm: SoftHsm, store: FileWrappedKeyStore, sid: str
) -> None:
    """A module stuck inside a call (a network HSM that stopped answering): the call in
    flight fails after ``call_timeout`` with KeyProviderUnavailable, the stuck worker is
    killed, and the next call gets a new one."""
    _forget_worker(softhsm, OTHER_TOKEN_LABEL)
    settings = softhsm.settings(OTHER_TOKEN_LABEL).model_copy(update={"call_timeout": 3.0})
    provider = Pkcs11KeyProvider(settings, store)
    try:
        provider.create(sid, REGION, TAGS)
        key = provider.data_key(sid)
        stuck = _kill_and_wait(provider, signal.SIGSTOP)
        with pytest.raises(KeyProviderUnavailable, match="did not answer within 3 s"):
            provider.data_key(sid)
        assert not Path(f"/proc/{stuck}").exists()  # killed and reaped
        assert provider.data_key(sid) == key
        assert _worker_pid(provider) != stuck
    finally:
        _forget_worker(softhsm, OTHER_TOKEN_LABEL)


def test_a_worker_that_keeps_dying_is_restarted_at_a_bounded_rate(
    fresh: Pkcs11KeyProvider, sid: str
) -> None:
    """A module that crashes the worker on every call must not turn the operator into a
    fork loop: after five starts within a minute the provider refuses (fail closed)."""
    for _ in range(provider_module._MAX_STARTS):
        assert fresh.get(sid) is None
        _kill_and_wait(fresh)
    with pytest.raises(KeyProviderUnavailable, match="started 5 times"):
        fresh.get(sid)


def test_a_worker_is_replaced_between_calls_after_its_call_budget(
    fresh: Pkcs11KeyProvider, monkeypatch: pytest.MonkeyPatch, sid: str
) -> None:
    """SoftHSM2 keeps ~200 B per unwrap until C_Finalize, so a long-lived worker grows
    slowly; after ``_CALLS_PER_WORKER`` calls it is replaced between two calls — no call
    fails, and planned replacements do not count against the restart limit."""
    monkeypatch.setattr(provider_module, "_CALLS_PER_WORKER", 3)
    fresh.create(sid, REGION, TAGS)
    key = fresh.data_key(sid)
    pids = set()
    for _ in range(4 * provider_module._MAX_STARTS):
        assert fresh.data_key(sid) == key
        pids.add(_worker_pid(fresh))
    assert len(pids) > provider_module._MAX_STARTS


def test_a_process_still_logged_in_from_a_lost_session_keeps_working(
    softhsm: SoftHsm,
) -> None:
    """Login belongs to the application, not to a session (PKCS#11 v2.40, C_Login). When
    a session the worker opened earlier still holds the login — it dropped it after a
    hiccup and could not close it — a new login answers CKR_USER_ALREADY_LOGGED_IN. The
    worker must use the login it has, not fail every call until a restart (seen in CI:
    every provisioning and teardown failed with UserAlreadyLoggedIn). Run here in the
    test process, with the worker's own code."""
    with softhsm.session():  # a session that holds this process's login
        token = Token(str(softhsm.module), TOKEN_LABEL, USER_PIN)
        label = kek_label(f"wrk-{uuid.uuid4().hex[:12]}")
        object_id = uuid.uuid4().hex
        assert token.handle({"op": "generate", "what": "t", "label": label, "id": object_id}) == {
            "ok": None
        }
        wrapped = token.handle({"op": "wrap_new", "what": "t", "label": label, "id": object_id})
        reply = token.handle(
            {"op": "unwrap", "what": "t", "label": label, "id": object_id, "wrapped": wrapped["ok"]}
        )
        assert len(bytes.fromhex(reply["ok"])) == 32
        assert token.handle({"op": "destroy_all", "what": "t", "label": label}) == {
            "ok": [object_id]
        }


def test_the_worker_refuses_malformed_requests_with_a_clear_error(softhsm: SoftHsm) -> None:
    token = Token(str(softhsm.module), TOKEN_LABEL, USER_PIN)
    assert token.handle({"op": "exec", "what": "t"})["error"] == "error"
    reply = token.handle({"op": "unwrap", "what": "t", "label": "x", "id": "zz", "wrapped": ""})
    assert reply["error"] == "error"
    assert "hex" in reply["message"]


_MEMORY = """
import ctypes, gc, json, os, sys
from pathlib import Path
import regopy  # as in the operator: librego_shared.so exports snmalloc's new/delete
from pydantic import SecretStr
from sandbox.keys import FileWrappedKeyStore, Pkcs11KeyProvider, Pkcs11Settings
module, label, pin, directory, prefix, calls = sys.argv[1:7]
provider = Pkcs11KeyProvider(
    Pkcs11Settings(module=Path(module), token_label=label, pin=SecretStr(pin)),
    FileWrappedKeyStore(Path(directory)),
)
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
                .split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
def rss():
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
ids = [f"{prefix}-{i:02d}" for i in range(10)]
for sid in ids:
    provider.create(sid, "eu-west-1", {})
for i in range(100):
    provider.data_key(ids[i % 10]); provider.get(ids[i % 10])
gc.collect()
rss0, used0 = rss(), libc.mallinfo2().uordblks
for i in range(int(calls)):
    provider.data_key(ids[i % 10]); provider.get(ids[i % 10])
gc.collect()
maps = Path("/proc/self/maps").read_text()
print(json.dumps({"rss_growth": rss() - rss0, "glibc_growth": libc.mallinfo2().uordblks - used0,
                  "module_in_process": "libsofthsm2" in maps, "rego": "librego" in maps}))
"""


def test_thousands_of_token_calls_leave_the_operators_memory_flat(
    softhsm: SoftHsm, tmp_path: Path
) -> None:
    """The reproducer of the leak, in a fresh interpreter with regopy imported first (as
    in the operator): 1000 unwraps and 1000 finds. With the token calls in the operator's
    own process this grew glibc's in-use memory and RSS by ~130 MB (measured with this
    script on the in-process provider: +130.5 MB glibc, +130.7 MB RSS); now the module is
    not even loaded there."""
    settings = softhsm.settings(OTHER_TOKEN_LABEL)
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEMORY,
            str(settings.module),
            settings.token_label,
            settings.pin.get_secret_value(),
            str(tmp_path / "wrapped"),
            f"mem-{uuid.uuid4().hex[:8]}",
            "1000",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["rego"] is True
    assert result["module_in_process"] is False
    assert result["glibc_growth"] < 4 * 2**20, result
    assert result["rss_growth"] < 8 * 2**20, result
