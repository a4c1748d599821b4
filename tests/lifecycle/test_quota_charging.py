"""A claim written right after its quota is charged by admission, never left uncounted."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.kube.apply import create, get, quota_pending, write_charged
from sandbox.storage.profiles import workspace_pvc

from .helpers import unique

_PENDING = '{"message": "persistentvolumeclaims \\"workspace\\" is forbidden: status unknown for quota: sandbox, resources: persistentvolumeclaims"}'  # noqa: E501


def _refusal(status: int, body: str) -> ApiException:
    exc = ApiException(status=status, reason="Forbidden")
    exc.body = body
    return exc


def test_a_claim_written_right_after_its_quota_is_counted_at_once(
    admin_api: client.ApiClient,
) -> None:
    ns = unique("quota")
    client.CoreV1Api(admin_api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=ns))
    )
    hard = {"persistentvolumeclaims": "1", "requests.storage": "5Gi"}
    create(
        admin_api,
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "sandbox", "namespace": ns},
            "spec": {"hard": hard},
        },
    )
    # No wait in between: until the quota controller has computed the new quota's usage,
    # admission refuses the claim and write_charged tries again.
    write_charged(create, admin_api, workspace_pvc("t", ns, "5Gi", "encrypted"))
    quota = get(admin_api, "ResourceQuota", "sandbox", ns)
    assert quota is not None
    assert quota["status"]["used"] == {"persistentvolumeclaims": "1", "requests.storage": "5Gi"}
    second = workspace_pvc("t", ns, "1Gi", "plain")
    second["metadata"]["name"] = "second"
    with pytest.raises(ApiException) as exceeded:
        create(admin_api, second)
    assert exceeded.value.status == 403
    assert "exceeded quota" in str(exceeded.value.body)


def test_only_a_pending_quota_is_waited_for() -> None:
    assert quota_pending(_refusal(403, _PENDING))
    assert not quota_pending(_refusal(403, '{"message": "exceeded quota: sandbox"}'))
    assert not quota_pending(_refusal(409, _PENDING))
    calls: list[int] = []

    def write(api: Any, obj: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        if len(calls) < 3:
            raise _refusal(403, _PENDING)
        return obj

    assert write_charged(write, None, {"kind": "PersistentVolumeClaim"}) == {  # type: ignore[arg-type]
        "kind": "PersistentVolumeClaim"
    }
    assert len(calls) == 3

    def exceeded(api: Any, obj: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        raise _refusal(403, '{"message": "exceeded quota: sandbox"}')

    calls.clear()
    with pytest.raises(ApiException, match="Forbidden"):
        write_charged(exceeded, None, {})  # type: ignore[arg-type]
    assert len(calls) == 1  # any other refusal is the caller's at once


def test_a_quota_that_never_settles_gives_up_with_the_refusal() -> None:
    calls: list[int] = []

    def pending(api: Any, obj: dict[str, Any]) -> dict[str, Any]:
        calls.append(1)
        raise _refusal(403, _PENDING)

    with pytest.raises(ApiException) as refused:
        write_charged(pending, None, {}, timeout=0.1)  # type: ignore[arg-type]
    assert quota_pending(refused.value)
    assert 2 <= len(calls) <= 6
