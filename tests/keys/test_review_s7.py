"""Attacker-minded review of the ``pkcs11`` provider's worker process (session 7).

The worker runs the vendor's PKCS#11 module: native code the operator does not control.
Whatever comes back over its pipe must either be a well-formed reply or make the call
fail closed with :class:`~sandbox.keys.KeyProviderUnavailable` and the worker be
replaced — never another exception type escaping into the operator's handlers, and never
a worker left running after it sent something the provider could not read.

The misbehaving worker is a small script put in the real worker's place (no real module
misbehaves on demand); the provider, its pipes and its process handling are the real ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from sandbox.keys import FileWrappedKeyStore, KeyProviderUnavailable, Pkcs11KeyProvider
from sandbox.keys import pkcs11 as provider_module
from sandbox.keys.pkcs11 import Pkcs11Settings

_NESTED_REPLY = """
import os, struct, sys
def read(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data
def reply(body):
    os.write(1, struct.pack(">I", len(body)) + body)
read(struct.unpack(">I", read(4))[0])  # hello
reply(b'{"ok": {"pid": 1}}')
while True:
    read(struct.unpack(">I", read(4))[0])
    depth = 100_000  # 200 KB: well within the 1 MiB frame limit
    reply(b'{"ok": ' + b"[" * depth + b"]" * depth + b"}")
"""


@pytest.fixture
def misbehaving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pkcs11KeyProvider]:
    script = tmp_path / "worker.py"
    script.write_text(_NESTED_REPLY)
    monkeypatch.setattr(provider_module, "_WORKER_SCRIPT", script)
    settings = Pkcs11Settings(
        module=tmp_path / "no-module.so", token_label="review-s7", pin=SecretStr("1234-5678")
    )
    provider = Pkcs11KeyProvider(settings, FileWrappedKeyStore(tmp_path / "wrapped"))
    try:
        yield provider
    finally:
        provider._connection().close()
        with provider_module._CONNECTIONS_LOCK:
            provider_module._CONNECTIONS.pop((str(settings.module), settings.token_label), None)


def test_a_reply_nested_too_deep_to_parse_fails_the_call_closed(
    misbehaving: Pkcs11KeyProvider,
) -> None:
    with pytest.raises(KeyProviderUnavailable):
        misbehaving.get("sbx-review")
    assert misbehaving._connection().worker_pid is None  # the worker was not kept


_UNKNOWN_REPLY = _NESTED_REPLY.replace(
    'reply(b\'{"ok": \' + b"[" * depth + b"]" * depth + b"}")', "reply(b'{\"neither\": 1}')"
)


def test_a_worker_that_sends_a_reply_of_no_known_kind_is_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "unknown.py"
    script.write_text(_UNKNOWN_REPLY)
    assert "neither" in script.read_text()
    monkeypatch.setattr(provider_module, "_WORKER_SCRIPT", script)
    settings = Pkcs11Settings(
        module=tmp_path / "no-module.so", token_label="review-s7-b", pin=SecretStr("1234-5678")
    )
    provider = Pkcs11KeyProvider(settings, FileWrappedKeyStore(tmp_path / "wrapped"))
    try:
        with pytest.raises(KeyProviderUnavailable, match="malformed reply"):
            provider.get("sbx-review")
        assert provider._connection().worker_pid is None
    finally:
        provider._connection().close()
        with provider_module._CONNECTIONS_LOCK:
            provider_module._CONNECTIONS.pop((str(settings.module), settings.token_label), None)
