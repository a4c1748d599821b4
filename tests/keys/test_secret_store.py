"""Wrapped keys and the KEK in Secrets, on the real API server."""

from __future__ import annotations

import secrets

import pytest
from kubernetes import client

from sandbox.keys.local import LocalKeyProvider
from sandbox.keys.secret_store import KEK_SECRET, SecretWrappedKeyStore, load_or_create_kek
from sandbox.kube.apply import apply, get

pytestmark = pytest.mark.integration


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> str:
    name = f"keys-{secrets.token_hex(4)}"
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


def test_wrapped_keys_round_trip_first_writer_wins_and_delete_shreds(
    admin_api: client.ApiClient, namespace: str
) -> None:
    store = SecretWrappedKeyStore(admin_api, namespace, cache_seconds=0)
    assert store.get("sbx-a-b") is None
    assert store.put("sbx-a-b", b"first") == b"first"
    assert store.put("sbx-a-b", b"second") == b"first"  # create-if-absent: the first stays
    assert store.put("sbx-a-b", b"rewrapped", replace=True) == b"rewrapped"
    assert store.get("sbx-a-b") == b"rewrapped"
    secret = get(admin_api, "Secret", "regsandbox-key-sbx-a-b", namespace)
    assert secret is not None
    assert secret["metadata"]["annotations"]["regsandbox.io/sandbox-id"] == "sbx-a-b"
    assert store.ids() == ["sbx-a-b"]
    assert store.delete("sbx-a-b") is True
    assert store.delete("sbx-a-b") is False
    assert store.get("sbx-a-b") is None
    assert store.ids() == []


def test_kek_is_made_once_and_immutable(admin_api: client.ApiClient, namespace: str) -> None:
    kek = load_or_create_kek(admin_api, namespace)
    assert load_or_create_kek(admin_api, namespace) == kek
    secret = get(admin_api, "Secret", KEK_SECRET, namespace)
    assert secret is not None
    assert secret["immutable"] is True
    provider = LocalKeyProvider(kek, SecretWrappedKeyStore(admin_api, namespace))
    ref = provider.create("sbx-a-c", "lu-1", {})
    assert LocalKeyProvider(kek, SecretWrappedKeyStore(admin_api, namespace)).get("sbx-a-c") == ref
