"""What a deleted wrapped-key Secret leaves behind in etcd's history, on the real control plane.

Deleting a Secret removes it from GET and LIST at once, but etcd keeps earlier revisions
until it is compacted, and the API server serves them: a LIST at an exact old
``resourceVersion`` (``resourceVersionMatch=Exact``), or a watch starting there, whose
``DELETED`` event carries the object's last state, data and all. These tests pin down,
as the operator's identity (the chart's ClusterRole: get/list, no watch, on Secrets),
an ordinary authenticated user's (a tenant member's rights are checked with the real
operator in test_operator_crash.py), and an administrator's:

- right after a ``local`` key is destroyed, GET and LIST find nothing;
- a LIST at a revision from before the deletion still returns the wrapped key to the
  operator's identity, and a watch from there to an administrator, until compaction;
- after etcd is compacted past the deletion, the LIST is refused (410 Gone) for every
  identity, so the operator's has no way left to read the wrapped key back (an
  administrator's watch can still be served from the API server's watch cache for a
  while — memory, not etcd; see the docs);
- an ordinary user cannot get, list or watch the operator's Secrets at any time.

docs/key-custody.md explains what this means for crypto-shredding and which compaction
settings bound the window.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from sandbox.devenv.controlplane import ControlPlane
from sandbox.keys import LocalKeyProvider, generate_kek
from sandbox.keys.secret_store import SecretWrappedKeyStore
from tests.lifecycle.helpers import SYSTEM_NS, unique

pytestmark = pytest.mark.integration

REGION = "lu-national-1"


def _watch_from(api: client.ApiClient, name: str, resource_version: str) -> list[dict[str, Any]]:
    """The objects a watch on Secret ``name`` from ``resource_version`` returns; raises
    ApiException(410) when that revision was compacted."""
    core = client.CoreV1Api(api)
    response = core.list_namespaced_secret(
        SYSTEM_NS,
        watch=True,
        resource_version=resource_version,
        field_selector=f"metadata.name={name}",
        timeout_seconds=2,
        _preload_content=False,
    )
    try:
        events = [json.loads(line) for line in response.data.decode().splitlines() if line]
    finally:
        response.release_conn()
    for event in events:
        if event.get("type") == "ERROR":
            raise ApiException(status=int((event.get("object") or {}).get("code") or 0))
    return [event.get("object") or {} for event in events]


def _list_at(api: client.ApiClient, name: str, resource_version: str) -> list[dict[str, Any]]:
    """Secret ``name`` as it was at ``resource_version`` (served from etcd's history)."""
    core = client.CoreV1Api(api)
    listed = core.list_namespaced_secret(
        SYSTEM_NS,
        resource_version=resource_version,
        resource_version_match="Exact",
        field_selector=f"metadata.name={name}",
        _preload_content=False,
    )
    return list(json.loads(listed.data)["items"])


def _values(objects: list[dict[str, Any]]) -> list[bytes]:
    """Wrapped keys carried by the objects."""
    return [
        base64.b64decode(data["value"])
        for data in ((obj.get("data") or {}) for obj in objects)
        if "value" in data
    ]


def _refused(read: Callable[[], Any]) -> int:
    """The HTTP status ``read`` was refused with (0 when it was answered)."""
    try:
        read()
    except ApiException as exc:
        return int(exc.status)
    return 0


def _compact(control_plane: ControlPlane) -> int:
    """Compact etcd (physically) at its current revision; the revision compacted."""
    state = control_plane.load_state()
    assert state is not None
    base = f"http://127.0.0.1:{state.etcd_port}/v3/kv"
    key = base64.b64encode(b"/registry/").decode()
    header = httpx.post(f"{base}/range", json={"key": key, "limit": 1}, timeout=10).json()
    revision = int(header["header"]["revision"])
    answer = httpx.post(
        f"{base}/compaction", json={"revision": revision, "physical": True}, timeout=30
    )
    # A revision compacted already (by an earlier call, or by the API server's own
    # periodic compaction) is answered 400 "required revision has been compacted".
    if answer.status_code == 400 and "compacted" in answer.text:
        return revision
    answer.raise_for_status()
    return revision


def test_a_destroyed_wrapped_key_is_readable_from_etcd_history_only_until_compaction(
    admin_api: client.ApiClient,
    control_plane: ControlPlane,
    operator_kubeconfig: Path,
    user_api: Callable[..., client.ApiClient],
) -> None:
    operator_api = config.new_client_from_config(config_file=str(operator_kubeconfig))
    tenant_api = user_api(unique("tenant-user"), "regsandbox-tenant-members")
    store = SecretWrappedKeyStore(operator_api, SYSTEM_NS, cache_seconds=0)
    provider = LocalKeyProvider(generate_kek(), store)
    sid = unique("shred")
    provider.create(sid, REGION, {})
    name = f"regsandbox-key-{sid}"
    secret = client.CoreV1Api(operator_api).read_namespaced_secret(name, SYSTEM_NS)
    wrapped = base64.b64decode(secret.data["value"])
    before = secret.metadata.resource_version

    destruction = provider.destroy(sid)
    assert destruction.outcome == "destroyed"
    assert f"GET Secret {SYSTEM_NS}/{name} from the API server: 404" in (
        destruction.confirmation or ""
    )
    with pytest.raises(ApiException) as missing:
        client.CoreV1Api(operator_api).read_namespaced_secret(name, SYSTEM_NS)
    assert missing.value.status == 404
    listed = client.CoreV1Api(operator_api).list_namespaced_secret(
        SYSTEM_NS, field_selector=f"metadata.name={name}"
    )
    assert listed.items == []

    # An ordinary user never reaches the operator's Secrets: not by GET, LIST or WATCH.
    tenant_core = client.CoreV1Api(tenant_api)
    assert _refused(lambda: tenant_core.read_namespaced_secret(name, SYSTEM_NS)) == 403
    assert _refused(lambda: _list_at(tenant_api, name, before)) == 403
    assert _refused(lambda: _watch_from(tenant_api, name, before)) == 403
    # The operator's identity cannot watch Secrets at all ...
    assert _refused(lambda: _watch_from(operator_api, name, before)) == 403

    # ... but history is there: a LIST at the old revision returns the wrapped key to
    # the operator's identity, and a watch from it to an administrator.
    assert _values(_list_at(operator_api, name, before)) == [wrapped]
    assert wrapped in _values(_watch_from(admin_api, name, before))

    # After compaction the old revisions are gone from etcd: the operator's identity has
    # no way left to read the wrapped key (LIST at the revision: 410 Gone; watch: 403).
    deadline = time.monotonic() + 60
    while _refused(lambda: _list_at(operator_api, name, before)) != 410:
        assert time.monotonic() < deadline, "the compacted revision is still listed"
        _compact(control_plane)
        time.sleep(1.0)
    assert _refused(lambda: _list_at(admin_api, name, before)) == 410
    assert _refused(lambda: _watch_from(operator_api, name, before)) == 403
    # An administrator's watch from the old revision may still be answered from the API
    # server's watch cache (memory, not etcd) until the cache rolls over; that is what
    # docs/key-custody.md's --watch-cache-sizes=secrets#0 advice is about.
