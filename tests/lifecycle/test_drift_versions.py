"""A drift check reads back only what changed, and still sees every change (real API server).

The operator vouches for the version of each object it saw holding what it wanted; a
metadata-only watch tells it when that version is no longer the live one. These tests
edit, delete and add objects behind its back, as a person with kubectl would, and stop
the watch, as a lost connection would.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.keys.secret_store import SecretWrappedKeyStore
from sandbox.kube.apply import _pool, apply, delete, get
from sandbox.kube.versions import VersionIndex
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.sandboxes.claim import claim_namespace
from sandbox.lifecycle.sandboxes.drift import _restore
from sandbox.provision.names import managed_labels

from .conftest import METRICS_PORT
from .helpers import ready_sandbox, unique

pytestmark = pytest.mark.integration


def _poll(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _policy(ns: str, name: str, ports: list[int]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "regsandbox"},
        },
        "spec": {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": p, "protocol": "TCP"} for p in ports]}],
        },
    }


@pytest.fixture
def namespace(admin_api: client.ApiClient) -> Iterator[str]:
    ns = unique("versions")
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    yield ns
    delete(admin_api, "Namespace", ns, propagation="Background")


@pytest.fixture
def index(admin_api: client.ApiClient) -> Iterator[VersionIndex]:
    versions = VersionIndex(admin_api, watch_seconds=2, stale_after=6.0).start()
    assert versions.wait_synced(20), versions
    yield versions
    versions.stop()


def test_an_object_seen_holding_is_unchanged_until_anyone_touches_it(
    admin_api: client.ApiClient, index: VersionIndex, namespace: str
) -> None:
    desired = _policy(namespace, "allow-dns", [53])
    index.vouch(desired, apply(admin_api, desired))
    _poll(lambda: index.unchanged(desired), "the watch to report the written version")

    # What the operator wants changes (a new egress rule): no longer vouched for.
    assert not index.unchanged(_policy(namespace, "allow-dns", [53, 5353]))

    # A hand edit of a field the operator does not even set still changes the version.
    client.NetworkingV1Api(admin_api).patch_namespaced_network_policy(
        "allow-dns", namespace, {"metadata": {"annotations": {"edited-by": "someone"}}}
    )
    _poll(lambda: not index.unchanged(desired), "the edit to be seen")

    # Seen holding again (a drift check read it), then deleted behind the operator's back.
    index.vouch(desired, apply(admin_api, desired))
    _poll(lambda: index.unchanged(desired), "the re-applied version")
    delete(admin_api, "NetworkPolicy", "allow-dns", namespace, propagation="Background")
    _poll(lambda: not index.unchanged(desired), "the deletion to be seen")


def test_a_namespace_the_claim_created_is_not_read_back_until_someone_edits_it(
    admin_api: client.ApiClient, index: VersionIndex
) -> None:
    """The first drift check of a new sandbox does not read back the namespace the
    provisioning just made; a label edited by hand is still seen (and read)."""
    name = unique("sbx-claim")
    wanted = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": managed_labels(tenant="t", sandbox="s")},
    }
    try:
        assert claim_namespace(admin_api, wanted, "t", "s", index) == (None, True)
        _poll(lambda: index.unchanged(wanted), "the created version to be vouched for")
        # Claimed again (it exists): nothing new is vouched for, the old vouch stands.
        assert claim_namespace(admin_api, wanted, "t", "s", index) == (None, False)
        assert index.unchanged(wanted)
        client.CoreV1Api(admin_api).patch_namespace(
            name, {"metadata": {"labels": {"regsandbox.io/sandbox": "other"}}}
        )
        _poll(lambda: not index.unchanged(wanted), "the edit to be seen")
    finally:
        delete(admin_api, "Namespace", name, propagation="Background")


def test_objects_nobody_vouched_for_are_never_unchanged(
    admin_api: client.ApiClient, index: VersionIndex, namespace: str
) -> None:
    desired = _policy(namespace, "allow-gateway", [8443])
    apply(admin_api, desired)
    probe = _policy(namespace, "probe", [1])
    index.vouch(probe, apply(admin_api, probe))
    _poll(lambda: index.unchanged(probe), "the watch to catch up")
    assert not index.unchanged(desired)


def test_policies_and_rbac_made_by_others_are_listed_by_name(
    admin_api: client.ApiClient, index: VersionIndex, namespace: str
) -> None:
    foreign = _policy(namespace, "allow-everything", [1])
    del foreign["metadata"]["labels"]
    apply(admin_api, foreign)
    _poll(lambda: "allow-everything" in (index.names("NetworkPolicy", namespace) or set()), "it")
    with pytest.raises(ValueError, match="own objects only"):
        index.names("LimitRange", namespace)


def test_an_index_that_lost_the_api_server_answers_unknown(
    admin_api: client.ApiClient, namespace: str
) -> None:
    versions = VersionIndex(admin_api, watch_seconds=1, stale_after=3.0).start()
    assert versions.wait_synced(20)
    desired = _policy(namespace, "default-deny", [1])
    versions.vouch(desired, apply(admin_api, desired))
    _poll(lambda: versions.unchanged(desired), "the written version")
    versions.stop()
    _poll(lambda: not versions.unchanged(desired), "the stopped index to go stale")
    assert versions.names("NetworkPolicy", namespace) is None


def test_secrets_are_never_watched(admin_api: client.ApiClient) -> None:
    with pytest.raises(ValueError, match="Secrets are never watched"):
        VersionIndex(admin_api, ("Namespace", "Secret"))


def _counting(api: client.ApiClient) -> tuple[client.ApiClient, list[tuple[str, str]]]:
    """A client on ``api``'s server and credentials, and the requests it sends."""
    counted = client.ApiClient(api.configuration)
    route = _pool(counted)
    assert route is not None
    pool = route[0]
    sent: list[tuple[str, str]] = []
    urlopen = pool.urlopen

    def record(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        sent.append((method, url))
        return urlopen(method, url, *args, **kwargs)

    pool.urlopen = record  # type: ignore[method-assign]
    return counted, sent


def _secret(ns: str, name: str, value: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "regsandbox"},
        },
        "type": "Opaque",
        "stringData": {"value": value},
    }


def test_drift_checks_read_an_untouched_secret_never_and_an_edited_one_at_once(
    admin_api: client.ApiClient, namespace: str
) -> None:
    """Secrets are not watched; a metadata-only LIST of the operator's Secrets, shared by
    every check within ``list_fresh_for``, stands in for the GET each check made."""
    index = VersionIndex(admin_api, (), list_fresh_for=0.5)
    counted, sent = _counting(admin_api)
    platform = cast(Platform, SimpleNamespace(api=counted, versions=index))
    desired = {**_secret(namespace, "storage-key", "k1"), "data": {"value": "azE="}}
    del desired["stringData"]
    index.vouch(desired, apply(admin_api, desired))
    path = f"/api/v1/namespaces/{namespace}/secrets/storage-key"

    _poll(lambda: index.unchanged(desired), "a LIST showing the written version")
    sent.clear()
    for _ in range(5):
        assert _restore(platform, [desired]) == ([], {"Secret": {}})
    assert [s for s in sent if path in s[1]] == []

    # Edited behind the operator's back: the next LIST shows a new version, and the
    # check reads it and puts the value back.
    client.CoreV1Api(admin_api).patch_namespaced_secret(
        "storage-key", namespace, {"data": {"value": "ZWRpdGVk"}}
    )
    _poll(
        lambda: _restore(platform, [desired])[0] == ["Secret/storage-key restored"],
        "the edit to be seen and restored",
        timeout=10,
    )
    assert ("GET", path) in [(m, u.split("?")[0]) for m, u in sent]
    live = get(admin_api, "Secret", "storage-key", namespace)
    assert live is not None
    assert live["data"] == {"value": "azE="}


def test_the_index_lists_secrets_by_metadata_only_and_never_watches_them(
    admin_api: client.ApiClient, namespace: str
) -> None:
    index = VersionIndex(admin_api, ("Namespace",), list_fresh_for=0.5).start()
    try:
        assert index.wait_synced(20)
        assert not [t for t in threading.enumerate() if t.name == "versions-Secret"]
        desired = _secret(namespace, "listed", "v")
        index.vouch(desired, apply(admin_api, desired))
        _poll(lambda: index.unchanged(desired), "the LIST")
        delete(admin_api, "Secret", "listed", namespace)
        _poll(lambda: not index.unchanged(desired), "the deletion to be listed", timeout=10)
    finally:
        index.stop()
    # A stopped index lists no more: it cannot vouch for anything.
    assert not index.unchanged(desired)


def test_a_cached_wrapped_key_is_read_again_only_when_its_secret_changed(
    admin_api: client.ApiClient, namespace: str
) -> None:
    """The key store's cache outlives its minute while the Secret's version is the one it
    read; a rewrap (or deletion) by another process is read at once."""
    index = VersionIndex(admin_api, (), list_fresh_for=0.5)
    counted, sent = _counting(admin_api)
    store = SecretWrappedKeyStore(counted, namespace, cache_seconds=0, versions=index)
    other = SecretWrappedKeyStore(admin_api, namespace, cache_seconds=0)
    assert store.put("sbx-a-b", b"wrapped-1") == b"wrapped-1"
    sent.clear()
    for _ in range(5):
        assert store.get("sbx-a-b") == b"wrapped-1"
    assert sent == []  # no GET: the LIST shows the Secret at the version it wrote

    assert other.swap("sbx-a-b", b"wrapped-1", b"wrapped-2")  # a rotation elsewhere
    _poll(lambda: store.get("sbx-a-b") == b"wrapped-2", "the rewrapped key", timeout=10)
    assert other.delete("sbx-a-b")
    _poll(lambda: store.get("sbx-a-b") is None, "the deletion", timeout=10)


def _requests(api: client.ApiClient) -> Counter[tuple[str, str]]:
    """``apiserver_request_total`` by (verb, resource), of one object or one namespace
    (the index's own cluster-wide lists are not a drift check's reads)."""
    response = api.call_api(
        "/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False
    )[0]
    counts: Counter[tuple[str, str]] = Counter()
    for line in response.data.decode().splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("scope") == "cluster":
                continue
            key = (labels.get("verb", ""), labels.get("resource", ""))
            counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def _drift_checks() -> int:
    """How many Sandbox drift checks the session operator has run."""
    text = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5).text
    prefix = 'regsandbox_reconciles_total{kind="Sandbox",step="drift"}'
    return sum(
        int(float(line.split()[-1])) for line in text.splitlines() if line.startswith(prefix)
    )


_NEVER_READ = (
    ("GET", "limitranges"),
    ("GET", "serviceaccounts"),
    ("GET", "networkpolicies"),
    ("LIST", "networkpolicies"),
    ("LIST", "rolebindings"),
    ("LIST", "roles"),
)
"""Reads a drift check of an untouched sandbox no longer makes (each was one per check).
(RoleBindings are still read by the Tenants' own checks, of their home namespaces.)"""


def test_drift_checks_of_an_untouched_sandbox_read_none_of_its_watched_objects(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
) -> None:
    """The session operator checks every Ready sandbox each second (resync 1 s).

    Other tests' sandboxes may be quarantined or expire meanwhile (those list policies),
    so one of three windows of four drift checks each must be free of such reads; before
    the index, every drift check of every sandbox made each of them.
    """
    tenant = tenant_factory()
    ready_sandbox(admin_api, operator, tenant)
    # Past the first checks after the operator started (its index was being listed).
    start = _drift_checks()
    operator.wait_until(lambda: _drift_checks() >= start + 2, 30, "two drift checks")
    windows = []
    for _ in range(3):
        before = _requests(admin_api)
        start = _drift_checks()
        operator.wait_until(lambda s=start: _drift_checks() >= s + 4, 30, "four more drift checks")
        after = _requests(admin_api)
        windows.append({key: after[key] - before[key] for key in _NEVER_READ})
        if windows[-1] == dict.fromkeys(_NEVER_READ, 0):
            return
    raise AssertionError(f"every window read objects the index follows: {windows}")
