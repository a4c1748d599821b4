"""kopf handlers: thin glue from Kubernetes events to :mod:`sandbox.lifecycle`.

Imported by ``sandbox-operator run`` after :func:`operators.runtime.configure`, since
the timer interval comes from the settings.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import kopf

from audit.client import AuditRejected, AuditUnavailable
from audit.errors import LogLockedError
from operators import runtime
from operators.metrics import EVENTS, RECONCILE_FAILURES, RECONCILES, bounded_reason, serve
from operators.persistence import ProgressAnnotations, StatusDiffBase
from operators.wiring import build_platform
from sandbox.api.conditions import find_condition, is_true
from sandbox.api.meta import API_GROUP, API_VERSION
from sandbox.api.sandbox import SandboxSpec, SandboxStatus
from sandbox.artifacts.outbox import ArtifactStore
from sandbox.kube.cache import strip_managed_fields
from sandbox.lifecycle import (
    StepResult,
    correct_drift,
    correct_tenant_drift,
    expire_sandbox,
    expires_at,
    provision_sandbox,
    reconcile_tenant,
    teardown_sandbox,
)
from sandbox.lifecycle.exports import reconcile_export, review_status
from sandbox.lifecycle.policies import reconcile_sandbox_policy, remove_sandbox_policy
from sandbox.lifecycle.step import read_status

__all__ = ["AUDIT_RETRY_SECONDS", "STARTUP_RETRY_SECONDS"]

AUDIT_RETRY_SECONDS = 5.0
"""How soon a step that raised because the audit log was unavailable is tried again."""
STARTUP_RETRY_SECONDS = 1.0
"""How soon a new leader tries again to open a local audit log its predecessor still holds."""

_SETTINGS = runtime.settings()
_FINALIZER = "regsandbox.io/finalizer"


@kopf.on.startup()
def _startup(settings: kopf.OperatorSettings, logger: Any, **_: Any) -> None:
    settings.persistence.finalizer = _FINALIZER
    settings.persistence.progress_storage = ProgressAnnotations()
    settings.persistence.diffbase_storage = StatusDiffBase()
    # Our own Events are posted explicitly; kopf's per-handler chatter is not.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 120
    settings.networking.request_timeout = 30
    # Handlers are synchronous and mostly wait on the API server: run many at once.
    settings.execution.max_workers = _SETTINGS.workers
    store = ArtifactStore(_SETTINGS.export_outbox) if _SETTINGS.export_outbox else None
    try:
        platform = build_platform(_SETTINGS)
    except AuditUnavailable as exc:
        if not isinstance(exc.__cause__, LogLockedError):
            raise
        # The previous leader released the Lease and is still exiting with the log
        # open: try again in a second, not kopf's minute.
        raise kopf.TemporaryError(str(exc), delay=STARTUP_RETRY_SECONDS) from exc
    runtime.configure(_SETTINGS, platform, store)
    if _SETTINGS.metrics_port:
        serve(_SETTINGS.metrics_host, _SETTINGS.metrics_port)  # no-op if `run` serves it
    logger.info("regsandbox operator started")


@kopf.on.login()
def _login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    if _SETTINGS.kubeconfig:  # `sandbox-operator run` exported it as KUBECONFIG
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


def _finish(result: StepResult, body: kopf.Body, patch: kopf.Patch, kind: str, step: str) -> None:
    """Write status, annotations and events; raise to retry if the step is unfinished."""
    for key, value in result.status.items():
        patch.status[key] = value
    for key, value in result.annotations.items():
        patch.metadata.annotations[key] = value
    for note in result.events:
        kopf.event(body, type=note.type, reason=note.reason, message=note.message)
        EVENTS.labels(kind, note.type, bounded_reason(note.reason)).inc()
    RECONCILES.labels(kind, step).inc()
    if result.retry_after is not None:
        # The reason label is the step's Warning reason (a code), never its message,
        # which names objects: one series per sandbox would not be a metric.
        warnings = [n.reason for n in result.events if n.type == "Warning"]
        reason = bounded_reason(warnings[-1] if warnings else "Waiting")
        RECONCILE_FAILURES.labels(kind, step, reason).inc()
        raise kopf.TemporaryError(result.retry_reason, delay=result.retry_after)


@contextmanager
def _retry_soon_without_audit(kind: str, step: str) -> Iterator[None]:
    """A step that raised because the audit log is unavailable is retried in seconds.

    Nothing it did is visible yet (fail closed); kopf's default back-off for an arbitrary
    error is a minute, while the log is usually back within seconds (a restart, a rollout).
    A request the log refused as invalid is left to that default.
    """
    try:
        yield
    except AuditRejected:
        raise
    except AuditUnavailable as exc:
        RECONCILE_FAILURES.labels(kind, step, "AuditLogUnavailable").inc()
        raise kopf.TemporaryError(
            f"audit log unavailable, nothing recorded: {exc}", delay=AUDIT_RETRY_SECONDS
        ) from exc


# -- Tenant -------------------------------------------------------------------------


@kopf.on.event(API_GROUP, API_VERSION, "tenants")
@kopf.on.event(API_GROUP, API_VERSION, "datasets")
async def _watched(event: kopf.RawEvent, resource: kopf.Resource, **_: Any) -> None:
    """Keep the platform's copies of Tenants and Datasets current (read per reconcile)."""
    kind = "Tenant" if resource.plural == "tenants" else "Dataset"
    runtime.platform().watched[kind].observe(event.get("type"), event["object"])


@kopf.on.create(API_GROUP, API_VERSION, "tenants")
@kopf.on.update(API_GROUP, API_VERSION, "tenants", field="spec")
@kopf.on.resume(API_GROUP, API_VERSION, "tenants")
def tenant_reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Apply the tenant's home namespace and member RBAC."""
    _finish(reconcile_tenant(runtime.platform(), body), body, patch, "Tenant", "reconcile")


@kopf.timer(
    API_GROUP,
    API_VERSION,
    "tenants",
    interval=_SETTINGS.resync_seconds,
    initial_delay=_SETTINGS.resync_seconds,  # a fresh tenant was just reconciled
)
def tenant_resync(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Restore a Ready tenant's home namespace and member RBAC after hand edits."""
    if is_true((body.get("status") or {}).get("conditions"), "Ready"):
        _finish(correct_tenant_drift(runtime.platform(), body), body, patch, "Tenant", "drift")


# -- Sandbox ------------------------------------------------------------------------


@kopf.on.event(API_GROUP, API_VERSION, "sandboxes")
async def _lighten(event: kopf.RawEvent, **_: Any) -> None:
    """Drop ``managedFields`` from the body kopf keeps for each Sandbox's timer.

    kopf keeps every Sandbox's latest body for as long as the operator runs; the
    field-manager bookkeeping is close to half of it (about 10 KB of Python objects per
    sandbox, 20 MB at 2,000) and no handler reads it.
    """
    strip_managed_fields(event.get("object"))


@kopf.on.create(API_GROUP, API_VERSION, "sandboxes")
@kopf.on.update(API_GROUP, API_VERSION, "sandboxes", field="spec")
@kopf.on.resume(API_GROUP, API_VERSION, "sandboxes")
def sandbox_provision(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Decide, then provision (or re-converge) the sandbox."""
    _finish(provision_sandbox(runtime.platform(), body), body, patch, "Sandbox", "provision")


@kopf.on.delete(API_GROUP, API_VERSION, "sandboxes")
def sandbox_delete(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Tear down and destroy the key before the finalizer is released."""
    with _retry_soon_without_audit("Sandbox", "delete"):
        result = teardown_sandbox(runtime.platform(), body)
    _finish(result, body, patch, "Sandbox", "delete")


def _expired(body: kopf.Body) -> bool:
    try:
        spec = SandboxSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return False
    return dt.datetime.now(dt.UTC) >= expires_at(body, spec)


@kopf.timer(
    API_GROUP,
    API_VERSION,
    "sandboxes",
    interval=_SETTINGS.resync_seconds,
    initial_delay=_SETTINGS.resync_seconds,  # a fresh sandbox was just reconciled
)
def sandbox_resync(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Expire at end of life; otherwise restore drifted objects and re-check policy."""
    conditions = (body.get("status") or {}).get("conditions")
    platform = runtime.platform()
    if _expired(body):
        ready = find_condition(conditions, "Ready")
        if ready is None or ready.get("reason") not in ("Expired", "ExpiredRetained"):
            _finish(expire_sandbox(platform, body), body, patch, "Sandbox", "expire")
        return
    policy = read_status(SandboxStatus, body).policy
    digest = platform.engine.policy_digest
    if policy is not None and digest and policy.digest != digest:
        # The policy set changed since the last decision: decide again (this may
        # quarantine a running sandbox, or provision one that was denied before).
        _finish(provision_sandbox(platform, body), body, patch, "Sandbox", "reevaluate")
        return
    if is_true(conditions, "Ready"):
        _finish(correct_drift(platform, body), body, patch, "Sandbox", "drift")


# -- SandboxPolicy ------------------------------------------------------------------


@kopf.on.create(API_GROUP, API_VERSION, "sandboxpolicies")
@kopf.on.update(API_GROUP, API_VERSION, "sandboxpolicies", field="spec")
@kopf.on.resume(API_GROUP, API_VERSION, "sandboxpolicies")
def sandbox_policy_reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Load the custom policy, or keep the previous set and say why."""
    with _retry_soon_without_audit("SandboxPolicy", "load"):
        result = reconcile_sandbox_policy(runtime.platform(), body)
    _finish(result, body, patch, "SandboxPolicy", "load")


@kopf.on.delete(API_GROUP, API_VERSION, "sandboxpolicies")
def sandbox_policy_delete(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Drop the custom policy from the active set."""
    with _retry_soon_without_audit("SandboxPolicy", "remove"):
        result = remove_sandbox_policy(runtime.platform(), body)
    _finish(result, body, patch, "SandboxPolicy", "remove")


# -- ModelExport and ExportReview ---------------------------------------------------


@kopf.timer(API_GROUP, API_VERSION, "modelexports", interval=_SETTINGS.export_resync_seconds)
def export_reconcile(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Move the export along: policy, reviews, release, revocation (level-triggered)."""
    store = runtime.artifact_store()
    if store is None:
        # Fail closed and say nothing: without an outbox nothing can be checked or released.
        raise kopf.TemporaryError("exports are not configured (REGSANDBOX_EXPORT_OUTBOX)", delay=60)
    _finish(
        reconcile_export(runtime.platform(), store, body), body, patch, "ModelExport", "reconcile"
    )


@kopf.on.create(API_GROUP, API_VERSION, "exportreviews")
@kopf.on.resume(API_GROUP, API_VERSION, "exportreviews")
def export_review_judge(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Say on the review whether it counts (the export's reconcile audits it)."""
    _finish(review_status(runtime.platform(), body), body, patch, "ExportReview", "judge")
