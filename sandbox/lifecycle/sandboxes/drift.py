"""Drift of a Ready sandbox: restore what the operator set, remove what weakens isolation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sandbox.kube.apply import apply, delete, get, list_objects
from sandbox.kube.quota import (
    claims_usage,
    counts_at_least,
    mend_usage,
    recount_asked_at,
    request_recount,
    usage_known,
)
from sandbox.lifecycle.drift import holds
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.lifecycle.sandboxes.desired import desired_objects
from sandbox.lifecycle.sandboxes.grant_refresh import refresh_grants_in
from sandbox.lifecycle.sandboxes.step import LoadedSandbox, SandboxStep, load
from sandbox.provision.names import sandbox_namespace

__all__ = ["correct_drift"]

_GUARDED_KINDS = ("NetworkPolicy", "Role", "RoleBinding")
"""Kinds whose extra objects in a sandbox namespace would weaken isolation."""

RECOUNT_PATIENCE = dt.timedelta(seconds=60)
"""How long a recount asked of the controller is given before it is asked again (and
``QuotaNotRecounted`` reported); only when the operator may not mend the usage itself.
The controller takes milliseconds, but in a burst of new sandboxes its queue is tens of
seconds long, and asking again at every check only lengthened it."""


def correct_drift(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Re-apply every managed object of a Ready sandbox and remove foreign RBAC/policies.

    An object that was missing, or whose managed fields had been edited, is restored
    (server-side apply bumps its resourceVersion only when something changed); any
    NetworkPolicy, Role or RoleBinding the operator did not make is deleted. Each
    correction is recorded in the audit log and announced with a Warning event; a log
    that cannot take the record raises (the sandbox stays Ready, the check runs again).
    """
    step = SandboxStep(platform, body, audit_condition=None)
    sandbox = load(step)
    if sandbox is None:
        return step.finish()
    desired = desired_objects(platform, body, sandbox.tenant, sandbox.tenant_spec, sandbox.spec)
    corrected, seen = _restore(platform, desired)
    recount = _recount(platform, desired, seen)
    _remove_foreign(platform, sandbox, desired, corrected)
    refresh_grants_in(step, sandbox.tenant_obj, sandbox.spec)
    ns = sandbox_namespace(sandbox.tenant, sandbox.name)
    if recount is not None:
        # Not drift: nobody edited anything; the quota controller counted from a cache
        # that missed the claim. Audited (the quota's accounting was mended), but no
        # DriftCorrected warning, which says someone changed what the operator owns.
        asked, not_recounted = recount
        step.log("sandbox.quota.recounted", "success", namespace=ns, recount=asked)
        if not_recounted:
            step.note("Warning", "QuotaNotRecounted", not_recounted)
    if corrected:
        step.log("sandbox.drift.corrected", "success", namespace=ns, corrections=corrected)
        step.note("Warning", "DriftCorrected", "; ".join(corrected))
    return step.finish()


def _restore(
    platform: Platform, desired: list[dict[str, Any]]
) -> tuple[list[str], dict[str, dict[str, Any] | None]]:
    """Re-apply each desired object that is missing or edited; what was done, what was seen.

    An object the platform's :class:`~sandbox.kube.versions.VersionIndex` shows unchanged
    since it was seen holding what is desired now is not read again (only its kind is
    noted as present). The ResourceQuota is vouched for only while it counts the
    workspace claim, so one that does not is read (and recounted) at every check.
    """
    corrected: list[str] = []
    seen: dict[str, dict[str, Any] | None] = {}
    index = platform.versions
    for obj in desired:
        meta = obj["metadata"]
        kind = obj["kind"]
        if index is not None and index.unchanged(obj):
            seen[kind] = seen.get(kind) or {}
            continue
        live = get(platform.api, kind, meta["name"], meta.get("namespace"))
        seen[kind] = live
        if live is None:
            live = apply(platform.api, obj)
            corrected.append(f"{kind}/{meta['name']} recreated")
        elif not holds(obj, live):
            live = apply(platform.api, obj)
            corrected.append(f"{kind}/{meta['name']} restored")
        if index is not None and holds(obj, live) and _settled(live):
            index.vouch(obj, live)
    return corrected, seen


def _settled(live: Mapping[str, Any]) -> bool:
    """Whether nothing but an edit can make ``live`` need a check: true of every object
    but a ResourceQuota that does not yet count the workspace claim."""
    return live.get("kind") != "ResourceQuota" or (
        usage_known(live) and counts_at_least(live, "persistentvolumeclaims", 1)
    )


def _claim_uncounted(seen: Mapping[str, Mapping[str, Any] | None]) -> bool:
    """Whether the live quota has computed usage, yet counts no claim while the claim exists.

    Quota admission leaves a claim uncharged when it is created before the API server
    has seen the quota's usage computed; see :mod:`sandbox.kube.quota`.
    """
    quota, claim = seen.get("ResourceQuota"), seen.get("PersistentVolumeClaim")
    return (
        quota is not None
        and claim is not None
        and usage_known(quota)
        and not counts_at_least(quota, "persistentvolumeclaims", 1)
    )


def _recount(
    platform: Platform,
    desired: list[dict[str, Any]],
    seen: Mapping[str, Mapping[str, Any] | None],
) -> tuple[str, str | None] | None:
    """Put the workspace claim back into a quota that counted it out.

    The operator raises the quota's usage by the claim itself (:func:`mend_usage`: one
    write, guarded by the version it read; a lost race is left to the next check). An
    operator that may not write quota status (an older ClusterRole) asks the controller
    for a recount instead, without waiting for it: the next check reads the quota again,
    and asks again if need be.

    ``None`` if nothing was done; else what was done, and a warning if an earlier
    request has not been acted on.
    """
    live = seen.get("ResourceQuota")
    if live is None or not _claim_uncounted(seen):
        return None
    quota = next(o for o in desired if o["kind"] == "ResourceQuota")
    name = quota["metadata"]["name"]
    used = claims_usage([o for o in desired if o["kind"] == "PersistentVolumeClaim"])
    if used is not None:
        outcome = mend_usage(platform.api, live, used)
        if outcome == "mended":
            return (
                f"ResourceQuota/{name} recounted: it counted no workspace claim, which the "
                "operator added to its usage",
                None,
            )
        if outcome != "forbidden":
            return None  # written meanwhile: the next check reads it again
    asked = recount_asked_at(live)
    # The API server's clock stamps ``asked``: one that looks in the future (skew) is
    # not trusted to hold the recount back.
    waited = None if asked is None else dt.datetime.now(dt.UTC) - asked
    if waited is not None and dt.timedelta(0) <= waited < RECOUNT_PATIENCE:
        return None  # asked recently: the controller has not got to it yet
    request_recount(platform.api, quota)
    meta = quota["metadata"]
    what = f"ResourceQuota/{name} recounted: it counted no workspace claim"
    if waited is not None and waited >= RECOUNT_PATIENCE:
        return what, (
            f"ResourceQuota {meta['namespace']}/{meta['name']} still counted no workspace "
            f"claim {RECOUNT_PATIENCE.seconds}s after a recount was asked (asked again); is "
            "kube-controller-manager's resourcequota controller running?"
        )
    return what, None


def _remove_foreign(
    platform: Platform,
    sandbox: LoadedSandbox,
    desired: list[dict[str, Any]],
    corrected: list[str],
) -> None:
    """Delete NetworkPolicies, Roles and RoleBindings the operator did not make."""
    ns = sandbox_namespace(sandbox.tenant, sandbox.name)
    wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
    for kind in _GUARDED_KINDS:
        for live_name in _names(platform, kind, ns):
            if (kind, live_name) not in wanted and delete(platform.api, kind, live_name, ns):
                corrected.append(f"{kind}/{live_name} removed")


def _names(platform: Platform, kind: str, namespace: str) -> set[str]:
    """Every ``kind`` object's name in ``namespace``: from the index, else listed."""
    known = platform.versions.names(kind, namespace) if platform.versions else None
    if known is not None:
        return known
    return {live["metadata"]["name"] for live in list_objects(platform.api, kind, namespace)}
