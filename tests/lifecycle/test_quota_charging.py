"""A claim written under a new quota is counted by it, on the real API server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.kube.apply import create, create_or_apply, get
from sandbox.kube.quota import (
    QuotaNotSettledError,
    counts_at_least,
    quota_pending,
    usage_known,
    wait_for_usage,
    write_counted,
)
from sandbox.storage.profiles import workspace_pvc

from .helpers import unique

_PENDING = '{"message": "persistentvolumeclaims \\"workspace\\" is forbidden: status unknown for quota: sandbox, resources: persistentvolumeclaims"}'  # noqa: E501
_HARD = {"persistentvolumeclaims": "1", "requests.storage": "5Gi"}


def _refusal(status: int, body: str) -> ApiException:
    exc = ApiException(status=status, reason="Forbidden")
    exc.body = body
    return exc


def _namespace(api: client.ApiClient) -> str:
    ns = unique("quota")
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=ns))
    )
    return ns


def _quota(ns: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "sandbox", "namespace": ns},
        "spec": {"hard": dict(_HARD)},
    }


def test_a_claim_written_right_after_its_quota_is_counted_at_once(
    admin_api: client.ApiClient,
) -> None:
    ns = _namespace(admin_api)
    quota = _quota(ns)
    create(admin_api, quota)
    # No wait in between: write_counted waits for the quota controller itself.
    recounted = write_counted(
        create,
        admin_api,
        workspace_pvc("t", ns, "5Gi", "encrypted"),
        quota,
        resource="persistentvolumeclaims",
        expected=1,
    )
    live = get(admin_api, "ResourceQuota", "sandbox", ns)
    assert live is not None
    assert live["status"]["used"] == {"persistentvolumeclaims": "1", "requests.storage": "5Gi"}
    assert recounted is False  # admission charged it; nothing had to be redone
    # A resumed provisioning creates it again: the full quota refuses that create before
    # the store would call it a duplicate, and create_or_apply still gets it applied.
    create_or_apply(admin_api, workspace_pvc("t", ns, "5Gi", "encrypted"))
    again = get(admin_api, "ResourceQuota", "sandbox", ns)
    assert again is not None
    assert again["status"]["used"]["persistentvolumeclaims"] == "1"
    second = workspace_pvc("t", ns, "1Gi", "plain")
    second["metadata"]["name"] = "second"
    with pytest.raises(ApiException) as exceeded:
        create(admin_api, second)
    assert exceeded.value.status == 403
    assert "exceeded quota" in str(exceeded.value.body)


def test_a_quota_that_missed_the_claim_is_recounted(admin_api: client.ApiClient) -> None:
    ns = _namespace(admin_api)
    quota = _quota(ns)
    create(admin_api, quota)
    claim = workspace_pvc("t", ns, "5Gi", "encrypted")
    create(admin_api, claim)
    # Let the controllers finish with the claim first: the PVC-protection finalizer is an
    # update that makes the quota controller recount.
    deadline = time.monotonic() + 30
    while True:
        pvc = get(admin_api, "PersistentVolumeClaim", "workspace", ns) or {}
        live = get(admin_api, "ResourceQuota", "sandbox", ns) or {}
        if pvc["metadata"].get("finalizers") and counts_at_least(live, "persistentvolumeclaims", 1):
            break
        assert time.monotonic() < deadline, "the claim was never counted"
        time.sleep(0.1)
    # Now make the quota under-count, as a computation from a stale cache would.
    core = client.CoreV1Api(admin_api)
    stale = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(
            name="sandbox", resource_version=live["metadata"]["resourceVersion"]
        ),
        spec=client.V1ResourceQuotaSpec(hard=dict(_HARD)),
        status=client.V1ResourceQuotaStatus(
            hard=dict(_HARD), used={"persistentvolumeclaims": "0", "requests.storage": "0"}
        ),
    )
    core.replace_namespaced_resource_quota_status("sandbox", ns, stale)

    # The claim is already there: write nothing. (A create would be charged by quota
    # admission even as it fails as a duplicate, and an apply that changes the claim makes
    # the quota controller recount; either would mend the count by itself.)
    recounted = write_counted(
        lambda api, obj: None,
        admin_api,
        claim,
        quota,
        resource="persistentvolumeclaims",
        expected=1,
    )
    assert recounted is True
    live = get(admin_api, "ResourceQuota", "sandbox", ns)
    assert live is not None
    assert live["status"]["used"]["persistentvolumeclaims"] == "1"
    assert live["status"]["used"]["requests.storage"] == "5Gi"


def test_a_quota_that_never_settles_is_reported(admin_api: client.ApiClient) -> None:
    ns = _namespace(admin_api)
    with pytest.raises(QuotaNotSettledError) as never:
        wait_for_usage(admin_api, ns, "sandbox", timeout=0.1)
    assert f"ResourceQuota {ns}/sandbox does not exist after 0.1s" in str(never.value)
    assert "resourcequota controller" in str(never.value)


def test_usage_is_known_only_for_every_limit() -> None:
    spec = {"spec": {"hard": dict(_HARD)}}
    assert not usage_known(spec)
    half = {**spec, "status": {"hard": dict(_HARD), "used": {"persistentvolumeclaims": "0"}}}
    assert not usage_known(half)
    full = {**spec, "status": {"hard": dict(_HARD), "used": {**_HARD}}}
    assert usage_known(full)
    assert counts_at_least(full, "persistentvolumeclaims", 1)
    assert not counts_at_least(half, "persistentvolumeclaims", 1)
    assert not counts_at_least(spec, "persistentvolumeclaims", 0)


def test_only_a_pending_quota_is_retried() -> None:
    assert quota_pending(_refusal(403, _PENDING))
    assert not quota_pending(_refusal(403, '{"message": "exceeded quota: sandbox"}'))
    assert not quota_pending(_refusal(409, _PENDING))
