"""Wrapped keys and the KEK in Secrets, on the real API server."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from kubernetes import client, config

from sandbox.keys.local import LocalKeyProvider, generate_kek
from sandbox.keys.secret_store import KEK_SECRET, SecretWrappedKeyStore, load_or_create_kek
from sandbox.kube.apply import apply, get
from tests.lifecycle.helpers import SYSTEM_NS

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


def test_rotation_and_destruction_work_with_the_operators_own_rights(
    operator_kubeconfig: Path,
) -> None:
    """The chart's ClusterRole (get, list, create, patch, delete on Secrets) is enough to
    rewrap under a new KEK, and a swap never re-creates a Secret deleted meanwhile."""
    api = config.new_client_from_config(config_file=str(operator_kubeconfig))
    store = SecretWrappedKeyStore(api, SYSTEM_NS, cache_seconds=0)
    sid = f"swap-{secrets.token_hex(4)}"
    assert store.put(sid, b"one") == b"one"
    assert store.swap(sid, b"stale", b"two") is False  # changed meanwhile: not written
    assert store.swap(sid, b"one", b"two") is True
    assert store.get(sid) == b"two"
    kek, new_kek = generate_kek(), generate_kek()
    provider = LocalKeyProvider(kek, store)
    other = f"swap-{secrets.token_hex(4)}"
    provider.create(other, "lu-1", {})
    data_key = provider.data_key(other)
    rotation = provider.rotate_kek(new_kek)
    assert rotation.rewrapped >= 1
    assert sid in rotation.failed  # not a wrapped-key record: left alone, reported
    assert other not in rotation.failed
    assert LocalKeyProvider(new_kek, store).data_key(other) == data_key
    destruction = provider.destroy(other)
    assert destruction.confirmation is not None
    assert "404 Not Found" in destruction.confirmation
    assert store.delete(sid) is True
    assert store.swap(sid, b"two", b"three") is False  # deleted: never re-created
    assert store.get(sid) is None
