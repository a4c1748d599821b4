"""Making a ResourceQuota count the objects the operator creates under it.

Two parts of Kubernetes keep a quota's ``status.used``, and neither is synchronous with
the other:

- the **quota controller** computes a quota's usage from its watch caches when the
  quota is created or its ``spec.hard`` changes, and after that recounts only when a
  counted object is deleted (or, for some kinds, changes size), or at its full resync
  (five minutes by default);
- **quota admission** charges an object as it is created, but only against a quota
  whose usage has been computed, as the API server's own cache shows it. Against a
  quota with no usage yet it lets the object in *uncharged*.

So an object written just before its quota, or before the API server has seen the
quota's usage computed, can stay uncounted until something makes the controller count
again: the namespace then holds more than its quota allows. The operator writes the
quota after the workspace claim (the one object of its own it counts) and gives it its
usage at once (:func:`seed_usage`: the claim, nothing else), so the quota is right from
its creation, whatever the controller's caches say. :func:`write_admitted` retries the
refusals of a quota whose usage is being computed, and the periodic drift check
:func:`mend_usage` — raises the usage of a quota that counts fewer of the operator's
objects than exist (or, without the right to write quota status, asks for a
:func:`recount`).

Why not leave the count to the controller and admission: the controller writes each
quota's status through a client limited to 20 requests a second by default
(``--kube-api-qps``), so in a burst of new sandboxes its first counts fall seconds
behind. A claim written after its quota but before that first count is let in
uncharged; one charged by admission can be counted out again by a count in flight
(the controller reads the quota as charged, but counts the claims in a watch cache
that may not have this one yet, because admission charges the quota before the claim
is stored). Either way the claim stayed uncounted — free to be taken twice — until a
recount: about one quota in six in a burst of 2,000. Written before its quota and
seeded into it, the claim is counted from the start, and the controller's first
count, finding the same, writes nothing — fewer requests for a controller that is the
bottleneck in a burst. Only a controller whose claim cache lags behind its quota cache
by more than the quota's whole life so far can still count the claim out (in a burst
of 2,000 in the benchmark, nearly one quota in two); the drift check's mend is for
that.

A recount changes ``spec.hard`` twice — adding :data:`RECOUNT_KEY`, then removing it —
because a spec change is what makes the controller count afresh. That key limits
objects of a resource that does not exist, so no limit is lifted or tightened on the
way (deleting and recreating the quota would leave the namespace unlimited until the
new quota's usage was computed). The controller computes a quota's whole usage afresh
whenever it syncs it, whichever spec it then reads, so :func:`request_recount` sends
both changes back to back and returns: the drift check looks again at its next run
instead of holding a worker while the controller catches up (seconds in a burst).
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity

from sandbox.kube.apply import FIELD_MANAGER, apply, get, replace_status

__all__ = [
    "RECOUNT_KEY",
    "QuotaNotSettledError",
    "claims_usage",
    "counts_at_least",
    "mend_usage",
    "quota_pending",
    "recount",
    "recount_asked_at",
    "request_recount",
    "seed_usage",
    "usage_known",
    "write_admitted",
]

_log = logging.getLogger(__name__)

RECOUNT_KEY = "count/recounts.regsandbox.io"
"""The inert limit a :func:`recount` adds for a moment (no such resource exists)."""

Write = Callable[[client.ApiClient, dict[str, Any]], Any]
"""A write of one object: :func:`~sandbox.kube.apply.create_or_apply` and friends."""


class QuotaNotSettledError(Exception):
    """The quota controller did not act on a quota within the time allowed."""


def _backoff(timeout: float, first: float = 0.005, most: float = 0.25) -> Callable[[], bool]:
    """A sleeper: sleeps ``first``, then twice as long each time up to ``most``; False
    once ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    delay = first

    def sleep() -> bool:
        nonlocal delay
        if time.monotonic() + delay > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, most)
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


def claims_usage(claims: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
    """What ``claims`` (PersistentVolumeClaims as written) count against a quota:
    ``persistentvolumeclaims`` and ``requests.storage``; None unless there is exactly one
    (the workspace claim: its size needs no quantity arithmetic)."""
    if len(claims) != 1:
        return None
    size = (((claims[0].get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
        "storage"
    )
    if not size:
        return None
    return {"persistentvolumeclaims": "1", "requests.storage": str(size)}


def seed_usage(
    api: client.ApiClient, created: Mapping[str, Any], used: Mapping[str, str] | None = None
) -> bool:
    """Give a quota the operator has just created its usage: ``used`` (what the operator
    wrote in the namespace before it), ``0`` for everything else.

    ``created`` is the API server's answer to the create, in a namespace the operator
    has just made and is the only one to write in (nobody else holds a RoleBinding
    there yet). The quota controller computes a new quota's usage at its own pace —
    seconds late in a burst, its writes being limited to 20 a second by default — and
    from watch caches that may lag; until then admission charges nothing against the
    quota. Seeded, the quota is right from the start, and the controller's first count,
    finding the same, writes nothing.

    The write is a PUT of the status with the create's ``resourceVersion``, so it
    never overwrites anything: if the controller (or anyone) wrote the quota since, the
    API server refuses it with 409 and the quota is left as it is. The controller still
    counts the quota after this write (a count that read the quota before it fails on
    the version and is retried), so a seed that is wrong — a namespace holding more
    than the operator knew of — is put right by the controller as it would have been
    without it. Returns whether the usage was written; False too when the operator may
    not write quota status (an older ClusterRole), as then nothing is lost but speed.
    """
    if usage_known(created):
        return False
    hard = dict((created.get("spec") or {}).get("hard") or {})
    if not hard:
        return False
    counted = dict.fromkeys(hard, "0")
    counted.update({k: v for k, v in (used or {}).items() if k in hard})
    outcome = _write_status(api, created, {"hard": hard, "used": counted})
    if outcome == "forbidden":
        _log.warning(
            "may not update resourcequotas/status (a ClusterRole older than the "
            "operator?): new quotas are counted by the quota controller alone, and one "
            "that misses the workspace claim is recounted by the drift check"
        )
    return outcome == "written"


def _write_status(
    api: client.ApiClient, read: Mapping[str, Any], status: dict[str, Any]
) -> Literal["written", "raced", "forbidden"]:
    """PUT ``status`` on the quota as ``read``, guarded by that read's
    ``resourceVersion``: ``raced`` if anyone wrote it since (or deleted it), and
    ``forbidden`` if the operator may not write quota status."""
    changed = copy.deepcopy(dict(read))
    changed["status"] = status
    try:
        replace_status(api, changed)
    except ApiException as exc:
        if exc.status == 403:
            return "forbidden"
        if exc.status in (404, 409):
            return "raced"
        raise
    return "written"


def write_admitted(
    write: Write, api: client.ApiClient, obj: dict[str, Any], timeout: float = 10.0
) -> Any:
    """Write ``obj``, retrying refusals of :func:`quota_pending` for up to ``timeout``;
    returns what the write returned."""
    sleep = _backoff(timeout)
    while True:
        try:
            return write(api, obj)
        except ApiException as exc:
            if not quota_pending(exc) or not sleep():
                raise


def _await_hard(
    api: client.ApiClient, namespace: str, name: str, present: bool, timeout: float
) -> None:
    """Wait until the controller's ``status.hard`` has (or no longer has) the recount key.

    The controller takes tens of milliseconds at best and seconds in a burst, so the
    reads start at 50 ms apart: a burst of recounts does not add a burst of reads.
    """
    sleep = _backoff(timeout, first=0.05, most=0.5)
    while True:
        live = get(api, "ResourceQuota", name, namespace) or {}
        hard = (live.get("status") or {}).get("hard") or {}
        if (RECOUNT_KEY in hard) is present:
            return
        if not sleep():
            raise QuotaNotSettledError(
                f"the quota controller did not recount ResourceQuota {namespace}/{name} within "
                f"{timeout:g}s; is kube-controller-manager's resourcequota controller running?"
            )


def recount(api: client.ApiClient, quota: dict[str, Any], timeout: float = 10.0) -> None:
    """Have the quota controller count ``quota``'s namespace afresh; no limit changes.

    ``quota`` is the desired object (as the operator applies it); it is applied with
    :data:`RECOUNT_KEY` added, then as it is. Each step waits for the controller.
    """
    meta = quota["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    apply(api, _marked(quota))
    _await_hard(api, namespace, name, True, timeout)
    apply(api, quota)
    _await_hard(api, namespace, name, False, timeout)


def _marked(quota: dict[str, Any]) -> dict[str, Any]:
    marked = copy.deepcopy(quota)
    marked["spec"]["hard"][RECOUNT_KEY] = "0"
    return marked


MendOutcome = Literal["mended", "counted", "raced", "forbidden"]
"""What :func:`mend_usage` did: wrote the usage; found it counted already; lost to a
newer write; may not write quota status."""


def mend_usage(
    api: client.ApiClient, live: Mapping[str, Any], used: Mapping[str, str]
) -> MendOutcome:
    """Raise the usage of a quota the controller counted from a lagging cache to at
    least ``used`` (what the operator's own objects there count, e.g. the workspace
    claim), and only raise it.

    This is the drift check's remedy for a quota that misses the claim: one write,
    where a :func:`request_recount` took two, and the controller's writes after them
    (limited to 20 a second, the bottleneck in a burst). A usage raised too high can
    only refuse an object, never let one in; the controller's next count (its resync,
    or any counted object deleted) puts the exact figure back.

    ``live`` is the quota as read; the write is a PUT of its status guarded by that
    read's ``resourceVersion``, so a charge admission made since is never lost: the API
    server refuses the write (``"raced"``) and the next check reads the quota again.
    """
    status = dict(live.get("status") or {})
    hard = status.get("hard") or {}
    counted = dict(status.get("used") or {})
    raised = {
        k: v
        for k, v in used.items()
        if k in hard and parse_quantity(counted.get(k, "0")) < parse_quantity(v)
    }
    if not raised:
        return "counted"
    outcome = _write_status(api, live, {**status, "used": {**counted, **raised}})
    return "mended" if outcome == "written" else outcome


def request_recount(api: client.ApiClient, quota: dict[str, Any]) -> None:
    """Have the quota controller count ``quota``'s namespace afresh, without waiting.

    The two applies of :func:`recount`, back to back: each changes ``spec.hard``, so the
    controller queues the quota, and when it syncs it (once or twice) it computes all of
    its usage again. No limit changes. The caller checks the count at its next look and
    asks again if it is still short; :func:`recount_asked_at` tells how long ago it asked.
    """
    apply(api, _marked(quota))
    apply(api, quota)


def recount_asked_at(live: Mapping[str, Any]) -> dt.datetime | None:
    """When the operator last applied the quota's spec (a recount, or a drift correction),
    from its ``managedFields``; None if it never applied it (only created it)."""
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if (
            entry.get("manager") == FIELD_MANAGER
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
            and entry.get("time")
        ):
            return dt.datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00"))
    return None
