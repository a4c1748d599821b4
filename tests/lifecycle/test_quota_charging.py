"""Quota counting on the real API server: admission charges, and a recount mends a miss."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, cast

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

import sandbox.kube.quota as quota_module
import sandbox.lifecycle.sandboxes.drift as drift_module
from sandbox.kube.apply import FIELD_MANAGER, create, create_or_apply, get
from sandbox.kube.quota import (
    RECOUNT_KEY,
    QuotaNotSettledError,
    claims_usage,
    counts_at_least,
    mend_usage,
    quota_pending,
    recount,
    recount_asked_at,
    request_recount,
    seed_usage,
    usage_known,
    write_admitted,
)
from sandbox.lifecycle.sandboxes.desired import write_all
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


def _until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _live(api: client.ApiClient, ns: str) -> dict[str, Any]:
    return get(api, "ResourceQuota", "sandbox", ns) or {}


def _assert_second_claim_refused(api: client.ApiClient, ns: str) -> None:
    """A second claim does not fit: the quota counts the first."""
    second = workspace_pvc("t", ns, "1Gi", "plain")
    second["metadata"]["name"] = "second"
    with pytest.raises(ApiException) as exceeded:
        create(api, second)
    assert exceeded.value.status == 403
    assert "exceeded quota" in str(exceeded.value.body)


def test_a_claim_written_after_its_quota_is_charged_and_a_resumed_create_applies(
    admin_api: client.ApiClient,
) -> None:
    ns = _namespace(admin_api)
    create(admin_api, _quota(ns))
    _until(lambda: usage_known(_live(admin_api, ns)), "the quota's usage")
    write_admitted(create, admin_api, workspace_pvc("t", ns, "5Gi", "encrypted"))
    # Charged by admission in the same request, unless the API server's own cache had
    # not yet seen the computed usage (then the drift check's recount mends it).
    live = _until(
        lambda: (
            (q := _live(admin_api, ns)) and counts_at_least(q, "persistentvolumeclaims", 1) and q
        ),
        "the claim to be counted",
    )
    assert live["status"]["used"] == {"persistentvolumeclaims": "1", "requests.storage": "5Gi"}
    _assert_second_claim_refused(admin_api, ns)
    # A resumed provisioning creates the claim again: the full quota refuses that create
    # before the store would call it a duplicate, and create_or_apply still applies it.
    create_or_apply(admin_api, workspace_pvc("t", ns, "5Gi", "encrypted"))
    assert _live(admin_api, ns)["status"]["used"]["persistentvolumeclaims"] == "1"


def _under_count(api: client.ApiClient, ns: str) -> None:
    """Make the quota count no claim, as a computation from a stale cache would."""
    # The controllers may still recount once for the claim (its PVC-protection finalizer
    # is an update that makes the quota controller count again): write the stale usage
    # until it stays put for a second.
    for _ in range(20):
        live = _live(api, ns)
        stale = client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(
                name="sandbox", resource_version=live["metadata"]["resourceVersion"]
            ),
            spec=client.V1ResourceQuotaSpec(hard=dict(_HARD)),
            status=client.V1ResourceQuotaStatus(
                hard=dict(_HARD), used={"persistentvolumeclaims": "0", "requests.storage": "0"}
            ),
        )
        try:
            client.CoreV1Api(api).replace_namespaced_resource_quota_status("sandbox", ns, stale)
        except ApiException as exc:
            if exc.status != 409:  # the controller wrote in between: try again
                raise
            continue
        time.sleep(1.0)
        if not counts_at_least(_live(api, ns), "persistentvolumeclaims", 1):
            return
    pytest.fail("the quota kept being recounted by itself")


def test_a_quota_that_counted_the_claim_out_gets_it_back_in_one_guarded_write(
    admin_api: client.ApiClient,
) -> None:
    """What the drift check does on a quota the controller counted from a lagging cache:
    the claim goes back into the usage, which stops a second claim at once."""
    ns = _namespace(admin_api)
    create(admin_api, _quota(ns))
    _until(lambda: usage_known(_live(admin_api, ns)), "the quota's usage")
    write_admitted(create, admin_api, workspace_pvc("t", ns, "5Gi", "encrypted"))
    _under_count(admin_api, ns)
    stale = _live(admin_api, ns)
    claim = claims_usage([workspace_pvc("t", ns, "5Gi", "encrypted")])
    assert claim is not None

    # A read that is no longer current never overwrites what was written since (here a
    # hand edit; in life a charge by admission or the controller's count).
    edited = {**stale, "metadata": {**stale["metadata"], "annotations": {"seen": "later"}}}
    edited["metadata"] = {k: v for k, v in edited["metadata"].items() if k != "managedFields"}
    client.CoreV1Api(admin_api).replace_namespaced_resource_quota("sandbox", ns, cast(Any, edited))
    assert mend_usage(admin_api, stale, claim) == "raced"
    assert not counts_at_least(_live(admin_api, ns), "persistentvolumeclaims", 1)

    assert mend_usage(admin_api, _live(admin_api, ns), claim) == "mended"
    live = _live(admin_api, ns)
    assert live["status"]["used"] == {"persistentvolumeclaims": "1", "requests.storage": "5Gi"}
    assert live["status"]["hard"] == _HARD  # no limit moved
    _assert_second_claim_refused(admin_api, ns)
    # Counted already: nothing to write (and a usage is never lowered).
    assert mend_usage(admin_api, live, {"requests.storage": "1Gi"}) == "counted"
    assert (
        _live(admin_api, ns)["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]
    )


def test_a_quota_that_missed_the_claim_is_recounted_without_lifting_a_limit(
    admin_api: client.ApiClient,
) -> None:
    ns = _namespace(admin_api)
    quota = _quota(ns)
    create(admin_api, quota)
    create(admin_api, workspace_pvc("t", ns, "5Gi", "encrypted"))
    _under_count(admin_api, ns)

    recount(admin_api, quota)
    live = _live(admin_api, ns)
    assert live["status"]["used"] == {"persistentvolumeclaims": "1", "requests.storage": "5Gi"}
    assert live["spec"]["hard"] == _HARD  # the recount key is gone again
    assert RECOUNT_KEY not in live["status"]["hard"]


def test_a_requested_recount_mends_the_count_without_waiting_for_the_controller(
    admin_api: client.ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drift check asks and moves on: two applies, no read while the controller works
    (in a burst it takes seconds, and a waiting check held one of the operator's workers)."""
    ns = _namespace(admin_api)
    quota = _quota(ns)
    create(admin_api, quota)
    create(admin_api, workspace_pvc("t", ns, "5Gi", "encrypted"))
    _under_count(admin_api, ns)
    assert recount_asked_at(_live(admin_api, ns)) is None  # created, never applied

    sent: list[str] = []
    real_get, real_apply = quota_module.get, quota_module.apply
    monkeypatch.setattr(quota_module, "get", lambda *a: sent.append("GET") or real_get(*a))
    monkeypatch.setattr(quota_module, "apply", lambda *a: sent.append("APPLY") or real_apply(*a))
    request_recount(admin_api, quota)
    assert sent == ["APPLY", "APPLY"]

    live = _until(
        lambda: (
            (q := _live(admin_api, ns)) and counts_at_least(q, "persistentvolumeclaims", 1) and q
        ),
        "the controller to count the claim",
    )
    assert live["spec"]["hard"] == _HARD  # no limit lifted or left behind
    asked = recount_asked_at(live)
    assert asked is not None
    created = dt.datetime.fromisoformat(
        live["metadata"]["creationTimestamp"].replace("Z", "+00:00")
    )
    assert asked >= created


def test_a_recount_the_controller_never_does_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A quota controller that never acts: stopping the session's one would disturb every
    # other test, so the API calls are replaced here (and only here).
    applied: list[dict[str, Any]] = []
    monkeypatch.setattr(quota_module, "apply", lambda api, obj: applied.append(obj))
    monkeypatch.setattr(quota_module, "get", lambda api, kind, name, ns: {"status": {}})
    with pytest.raises(QuotaNotSettledError) as late:
        recount(None, _quota("sbx-t-a"), timeout=0.05)  # type: ignore[arg-type]
    assert "did not recount ResourceQuota sbx-t-a/sandbox within 0.05s" in str(late.value)
    assert "resourcequota controller" in str(late.value)
    assert [RECOUNT_KEY in obj["spec"]["hard"] for obj in applied] == [True]


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
    calls: list[int] = []

    def write(api: Any, obj: dict[str, Any]) -> None:
        calls.append(1)
        if len(calls) < 3:
            raise _refusal(403, _PENDING)

    write_admitted(write, None, {})  # type: ignore[arg-type]
    assert len(calls) == 3

    def exceeded(api: Any, obj: dict[str, Any]) -> None:
        calls.append(1)
        raise _refusal(403, '{"message": "exceeded quota: sandbox"}')

    calls.clear()
    with pytest.raises(ApiException, match="Forbidden"):
        write_admitted(exceeded, None, {})  # type: ignore[arg-type]
    assert len(calls) == 1  # any other refusal is the caller's at once


def _short_quota(ns: str, applied: dt.datetime | None) -> dict[str, Any]:
    """A live quota whose usage is known and counts no claim, last applied at ``applied``."""
    fields = []
    if applied is not None:
        stamp = applied.strftime("%Y-%m-%dT%H:%M:%SZ")
        fields = [{"manager": "regsandbox", "operation": "Apply", "time": stamp}]
    return {
        **_quota(ns),
        "metadata": {"name": "sandbox", "namespace": ns, "managedFields": fields},
        "status": {"hard": dict(_HARD), "used": dict.fromkeys(_HARD, "0")},
    }


@pytest.mark.parametrize(
    ("applied_ago", "asks", "warns"),
    [
        (None, True, False),  # never recounted: ask at once
        (dt.timedelta(seconds=5), False, False),  # asked 5 s ago: let the controller work
        (dt.timedelta(seconds=90), True, True),  # asked 90 s ago and still short: again, loudly
        (dt.timedelta(seconds=-600), True, False),  # a server clock ahead: never held back
    ],
)
def test_a_short_quota_is_asked_to_recount_at_most_once_per_patience(
    monkeypatch: pytest.MonkeyPatch,
    applied_ago: dt.timedelta | None,
    asks: bool,
    warns: bool,
) -> None:
    """In a burst the controller's queue is long; asking again at every drift check only
    made it longer (1.75 recounts per sandbox at 1,000 sandboxes)."""
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(drift_module, "request_recount", lambda api, quota: asked.append(quota))
    # An operator whose ClusterRole predates quota status writes: the controller recounts.
    monkeypatch.setattr(drift_module, "mend_usage", lambda api, live, used: "forbidden")
    now = dt.datetime.now(dt.UTC)
    live = _short_quota("sbx-t-a", None if applied_ago is None else now - applied_ago)
    claim = workspace_pvc("t", "sbx-t-a", "5Gi", "encrypted")
    result = drift_module._recount(
        cast(Any, SimpleNamespace(api=None)),
        [_quota("sbx-t-a")],
        {"ResourceQuota": live, "PersistentVolumeClaim": claim},
    )
    assert bool(asked) is asks
    assert (result is not None) is asks
    warning = None if result is None else result[1]
    assert (warning is not None) is warns
    if warns:
        assert "resourcequota controller" in str(warning)


@pytest.mark.parametrize(
    ("outcome", "reported"), [("mended", True), ("raced", False), ("counted", False)]
)
def test_a_short_quota_is_mended_by_the_operator_before_the_controller_is_asked(
    monkeypatch: pytest.MonkeyPatch, outcome: str, reported: bool
) -> None:
    asked: list[dict[str, Any]] = []
    mends: list[tuple[dict[str, Any], dict[str, str]]] = []
    monkeypatch.setattr(drift_module, "request_recount", lambda api, quota: asked.append(quota))

    def mend(api: Any, live: dict[str, Any], used: dict[str, str]) -> str:
        mends.append((live, used))
        return outcome

    monkeypatch.setattr(drift_module, "mend_usage", mend)
    live = _short_quota("sbx-t-a", None)
    claim = workspace_pvc("t", "sbx-t-a", "5Gi", "encrypted")
    result = drift_module._recount(
        cast(Any, SimpleNamespace(api=None)),
        [_quota("sbx-t-a"), claim],
        {"ResourceQuota": live, "PersistentVolumeClaim": claim},
    )
    assert mends == [(live, {"persistentvolumeclaims": "1", "requests.storage": "5Gi"})]
    assert asked == [], "the controller is not asked when the operator could write"
    assert (result is not None) is reported
    if result is not None:
        assert result[1] is None
        assert "ResourceQuota/sandbox recounted" in result[0]


def _managed(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "regsandbox"}
    return obj


def _seeded_by_us(quota: dict[str, Any]) -> bool:
    """Whether the quota's claim count is the operator's seed: its field manager owns
    ``status.used`` through the status subresource (a later write of another value by
    the controller takes that field over)."""
    for entry in (quota.get("metadata") or {}).get("managedFields") or []:
        if entry.get("manager") == FIELD_MANAGER and entry.get("subresource") == "status":
            used = ((entry.get("fieldsV1") or {}).get("f:status") or {}).get("f:used") or {}
            if "f:persistentvolumeclaims" in used:
                return True
    return False


def test_a_first_provisioning_leaves_the_quota_counting_the_claim(
    admin_api: client.ApiClient,
) -> None:
    """The burst case: the quota controller's first count of a new quota came after the
    claim, which admission had let in uncharged, or counted it out again from a lagging
    cache; the claim stayed uncounted until a recount. Now the claim comes first and the
    operator writes it into the new quota's usage: counted when ``write_all`` returns.

    The seed yields to a controller that counted first (409); such a quota holds the
    controller's count, as before, and is the drift check's to recount if need be.
    """

    def provision(ns: str) -> dict[str, Any]:
        claim = _managed(workspace_pvc("t", ns, "5Gi", "encrypted"))
        write_all(admin_api, [claim, _managed(_quota(ns))], first=True)
        return _live(admin_api, ns)  # no waiting for the controller

    # A small burst, as sandboxes applied at once make: without the seed most of these
    # quotas did not count their claim yet when their provisioning ended.
    namespaces = [_namespace(admin_api) for _ in range(60)]
    with ThreadPoolExecutor(12) as pool:
        quotas = list(pool.map(provision, namespaces))
    seeded = [q for q in quotas if _seeded_by_us(q)]
    assert len(seeded) >= len(quotas) // 2, f"only {len(seeded)} of {len(quotas)} seeded"
    counted = {"persistentvolumeclaims": "1", "requests.storage": "5Gi"}
    assert [q["status"]["used"] for q in seeded if q["status"]["used"] != counted] == []
    full = next(
        ns
        for ns in namespaces
        if counts_at_least(_live(admin_api, ns), "persistentvolumeclaims", 1)
    )
    second = workspace_pvc("t", full, "1Gi", "plain")
    second["metadata"]["name"] = "second"
    with pytest.raises(ApiException) as exceeded:
        create(admin_api, second)
    assert "exceeded quota" in str(exceeded.value.body)


def test_the_seed_counts_one_workspace_claim_and_nothing_it_cannot_add() -> None:
    claim = workspace_pvc("t", "ns", "7Gi", "encrypted")
    assert claims_usage([claim]) == {"persistentvolumeclaims": "1", "requests.storage": "7Gi"}
    assert claims_usage([]) is None  # no claim: left to the controller
    assert claims_usage([claim, claim]) is None  # sums of quantities: left to it too


def test_a_seed_never_overwrites_a_usage_written_since_the_create(
    admin_api: client.ApiClient,
) -> None:
    ns = _namespace(admin_api)
    created = create(admin_api, _quota(ns))
    # The controller computes the quota's usage after the create (whatever it counts).
    counted = _until(
        lambda: (q := _live(admin_api, ns)) and usage_known(q) and q,
        "the controller to count the quota",
    )
    assert not _seeded_by_us(counted)
    assert seed_usage(admin_api, created, {"persistentvolumeclaims": "1"}) is False  # stale
    assert seed_usage(admin_api, counted, {"persistentvolumeclaims": "1"}) is False  # known
    live = _live(admin_api, ns)
    assert live["status"] == counted["status"]
    assert not _seeded_by_us(live)
