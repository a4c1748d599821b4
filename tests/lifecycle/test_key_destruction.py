"""The ``key.destroyed`` audit entry carries the key provider's own confirmation.

A supervisor checking deletion at the end (AI Act Art. 59(1)(g)) needs more than the
operator's word: the entry names the provider, the key, and what the provider itself
reported (a real SoftHSM2 token: its ``C_FindObjects`` found nothing after
``C_DestroyObject``). Teardown runs in-process against the session's control plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from kubernetes import client

from audit.client import LocalAuditSink
from audit.log import AuditLog, LogReader
from audit.signing import Signer
from sandbox.keys import FileWrappedKeyStore, Pkcs11KeyProvider
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.sandboxes import ANNOTATION_KEY_AUDITED, teardown_sandbox
from sandbox.provision.names import sandbox_id
from tests.keys.conftest import SoftHsm, softhsm

from .helpers import unique

__all__ = ["softhsm"]  # the session's SoftHSM2 tokens, shared with tests/keys

ORIGIN = "test.regsandbox/key-destruction"


def test_key_destroyed_entry_records_the_providers_confirmation(
    admin_api: client.ApiClient, softhsm: SoftHsm, tmp_path: Path
) -> None:
    signer = Signer.generate(ORIGIN)
    AuditLog.create(tmp_path / "log", ORIGIN, signer).close()
    sink = LocalAuditSink(tmp_path / "log", signer)
    keys = Pkcs11KeyProvider(softhsm.settings(), FileWrappedKeyStore(tmp_path / "wrapped"))
    platform = Platform(
        api=admin_api,
        engine=cast(Any, None),  # teardown decides nothing
        audit=sink,
        keys=keys,
        storage=cast(Any, None),
        cluster_region="onprem:lu-national-1",
        cluster_jurisdiction="LU",
    )
    tenant, name = unique("hsm"), unique("sbx")
    key = keys.create(sandbox_id(tenant, name), "lu-national-1", {"regsandbox.io/tenant": tenant})
    body = {"metadata": {"name": name, "namespace": f"tenant-{tenant}", "generation": 1}}
    try:
        result = teardown_sandbox(platform, body)
    finally:
        sink.close()
    assert ANNOTATION_KEY_AUDITED in result.annotations
    reader = LogReader(tmp_path / "log")
    try:
        entries = [reader.entry(i) for i in range(reader.size)]
    finally:
        reader.close()
    destroyed = [e for e in entries if e.action == "key.destroyed"]
    assert len(destroyed) == 1
    details = destroyed[0].details
    assert (details["provider"], details["keyId"], details["outcome"]) == (
        "pkcs11",
        key.key_id,
        "destroyed",
    )
    assert "C_FindObjects" in details["confirmation"]
    assert key.key_id in details["confirmation"]
