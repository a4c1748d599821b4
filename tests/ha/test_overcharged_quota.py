"""A claim whose create was charged to the quota but never stored is still created.

Seen in the failover test: the leader was killed while its create of a sandbox's
workspace claim was in flight. Quota admission had charged the claim to the sandbox's
ResourceQuota, the write itself was dropped with the cancelled request, and the new
leader's create was refused as ``exceeded quota`` for a claim that did not exist —
until the quota controller's full resync, minutes later. Here the over-charge is made
by hand (the quota's status says one claim is used; none exists).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kubernetes import client

from sandbox.kube.apply import apply, get
from sandbox.kube.quota import usage_known
from sandbox.lifecycle.sandboxes.desired import write_all

pytestmark = pytest.mark.integration


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def test_a_first_provisioning_recounts_a_quota_charged_for_a_claim_that_never_landed(
    admin_api: client.ApiClient,
) -> None:
    namespace = f"sbx-overcharge-{uuid.uuid4().hex[:5]}"
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "sandbox", "namespace": namespace},
        "spec": {"hard": {"persistentvolumeclaims": "1", "requests.storage": "1Gi"}},
    }
    apply(admin_api, quota)
    _wait(
        lambda: usage_known(get(admin_api, "ResourceQuota", "sandbox", namespace) or {}),
        30,
        "the quota's usage",
    )
    client.CoreV1Api(admin_api).patch_namespaced_resource_quota_status(
        "sandbox",
        namespace,
        {"status": {"used": {"persistentvolumeclaims": "1", "requests.storage": "1Gi"}}},
    )
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "workspace", "namespace": namespace},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    write_all(admin_api, [quota, claim], first=True)
    assert get(admin_api, "PersistentVolumeClaim", "workspace", namespace) is not None
