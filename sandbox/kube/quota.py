"""Making a ResourceQuota count the objects the operator creates under it.

Two parts of Kubernetes keep a quota's ``status.used``, and neither is synchronous with
the other:

- the **quota controller** computes a new quota's usage from its watch caches, and
  after that recounts only when a counted object is deleted (or, for some kinds,
  changes size), or at its full resync (five minutes by default);
- **quota admission** charges an object as it is created, but only against a quota
  whose usage has been computed. Against a quota with no status yet it lets the
  object in *uncharged*, and reads quotas from the API server's own cache.

So an object written just before its quota, or before the controller has computed the
quota, or before the API server's cache has seen that computation, can stay uncounted
for minutes: the namespace then holds one more claim (and more storage) than its quota
allows. :func:`write_counted` closes each of these gaps in turn.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.kube.apply import create, delete, get

__all__ = [
    "QuotaNotSettledError",
    "counts_at_least",
    "quota_pending",
    "usage_known",
    "wait_for_usage",
    "write_counted",
]

Write = Callable[[client.ApiClient, dict[str, Any]], Any]
"""A write of one object: :func:`~sandbox.kube.apply.create_or_apply` and friends."""


class QuotaNotSettledError(Exception):
    """The quota's usage was not computed, or not right, within the time allowed."""


def _backoff(timeout: float) -> Callable[[], bool]:
    """A sleeper: sleeps 5 ms, then longer up to 0.25 s; False once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    delay = 0.005

    def sleep() -> bool:
        nonlocal delay
        if time.monotonic() + delay > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
        return True

    return sleep


def quota_pending(exc: ApiException) -> bool:
    """Whether quota admission refused a write because the quota's usage is not known yet."""
    return exc.status == 403 and "status unknown for quota" in str(exc.body or "")


def usage_known(quota: Mapping[str, Any]) -> bool:
    """Whether the quota controller has computed usage for every limit in the spec."""
    hard = set(((quota.get("spec") or {}).get("hard") or {}).keys())
    status = quota.get("status") or {}
    return hard <= set((status.get("hard") or {}).keys()) and hard <= set(
        (status.get("used") or {}).keys()
    )


def counts_at_least(quota: Mapping[str, Any], resource: str, minimum: int) -> bool:
    """Whether the quota's usage of an object-count ``resource`` is at least ``minimum``."""
    used = ((quota.get("status") or {}).get("used") or {}).get(resource)
    return used is not None and used.isdigit() and int(used) >= minimum


def wait_for_usage(
    api: client.ApiClient, namespace: str, name: str, timeout: float = 10.0
) -> dict[str, Any]:
    """The quota, once the quota controller has computed its usage."""
    sleep = _backoff(timeout)
    while True:
        quota = get(api, "ResourceQuota", name, namespace)
        if quota is not None and usage_known(quota):
            return quota
        if not sleep():
            state = "does not exist" if quota is None else "has no computed usage"
            raise QuotaNotSettledError(
                f"ResourceQuota {namespace}/{name} {state} after {timeout:g}s; "
                "is kube-controller-manager's resourcequota controller running?"
            )


def write_counted(
    write: Write,
    api: client.ApiClient,
    obj: dict[str, Any],
    quota: dict[str, Any],
    *,
    resource: str,
    expected: int,
    timeout: float = 10.0,
) -> bool:
    """Write ``obj`` so that ``quota`` (already written, as desired) counts it.

    Waits until the quota controller has computed the quota's usage, writes ``obj``
    (retrying refusals of :func:`quota_pending`), then checks that the quota counts at
    least ``expected`` of ``resource``. If it does not — admission let the object in
    before the API server's cache had seen the computed usage — the quota is deleted
    and created again, so that the controller counts afresh, and checked again.

    Returns True when such a recount was needed. Use it only while nothing else writes
    to the namespace: a recreated quota limits nothing until it is computed again.
    Raises :class:`QuotaNotSettledError` when the count is still short at ``timeout``.
    """
    meta = quota["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    wait_for_usage(api, namespace, name, timeout)
    sleep = _backoff(timeout)
    while True:
        try:
            write(api, obj)
            break
        except ApiException as exc:
            if not quota_pending(exc) or not sleep():
                raise
    live = get(api, "ResourceQuota", name, namespace)
    if live is not None and counts_at_least(live, resource, expected):
        return False
    sleep = _backoff(timeout)
    while True:
        delete(api, "ResourceQuota", name, namespace, propagation="Background")
        create(api, quota)
        live = wait_for_usage(api, namespace, name, timeout)
        if counts_at_least(live, resource, expected):
            return True
        if not sleep():
            raise QuotaNotSettledError(
                f"ResourceQuota {namespace}/{name} counts fewer than {expected} {resource} "
                f"after {timeout:g}s of recounting"
            )
