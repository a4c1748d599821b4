"""A Sandbox reconcile step, and what every Sandbox job reads first: tenant, specs, lifetime."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from audit.entry import Resource
from sandbox.api.meta import parse_duration
from sandbox.api.sandbox import SandboxSpec, SandboxStatus
from sandbox.api.tenant import TenantSpec
from sandbox.lifecycle.objects import object_meta, parse_time, problems, tenant_of
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.lifecycle.step import Step
from sandbox.provision.names import tenant_namespace

__all__ = ["LoadedSandbox", "SandboxStep", "expires_at", "load", "sandbox_resource"]


class SandboxStep(Step[SandboxStatus]):
    """A Sandbox step: ``status.ready`` mirrors the ``Ready`` condition it sets."""

    def __init__(
        self, platform: Platform, body: Mapping[str, Any], *, audit_condition: str | None = "Ready"
    ) -> None:
        _, namespace, _ = object_meta(body)
        tenant = tenant_of(namespace)
        super().__init__(
            platform,
            body,
            SandboxStatus,
            sandbox_resource(body, tenant),
            audit_condition=audit_condition,
        )

    def fail(self, reason: str, message: str, *, retry: float | None = None) -> None:
        """Ready=False with a reason a person can act on (and a Warning event)."""
        self.cond("Ready", False, reason, message)
        self.status.observed_generation = self.generation
        self.note("Warning", reason, message)
        if retry is not None:
            self.retry(retry, message)

    def finish(self) -> StepResult:
        """Commit, mirror ``Ready`` into ``status.ready`` if it was set, return the result."""
        self.commit()
        if "Ready" in self.touched:
            self.status.ready = "True" if self.is_true("Ready") else "False"
        return super().finish()


def sandbox_resource(body: Mapping[str, Any], tenant: str | None) -> Resource:
    """The Sandbox as audit entries name it."""
    name, namespace, _ = object_meta(body)
    return Resource(kind="Sandbox", name=name, namespace=namespace, tenant=tenant, sandbox=name)


def expires_at(body: Mapping[str, Any], spec: SandboxSpec) -> dt.datetime:
    """End of the sandbox: creation time plus ttl, or the fixed ``expiresAt``."""
    if spec.lifetime.expires_at is not None:
        return spec.lifetime.expires_at.astimezone(dt.UTC)
    created = parse_time(str(body["metadata"]["creationTimestamp"]))
    try:
        return created + parse_duration(spec.lifetime.ttl or "0s")
    except OverflowError:
        # A ttl ending after year 9999 (the CRD bounds no number): it ends at the last
        # representable instant, which policy refuses (SANDBOX_LIFETIME_TOO_LONG).
        return dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class LoadedSandbox:
    """A Sandbox with its tenant found and both specs valid."""

    name: str
    tenant: str
    tenant_obj: dict[str, Any]
    tenant_spec: TenantSpec
    spec: SandboxSpec


def load(step: SandboxStep) -> LoadedSandbox | None:
    """Find the tenant and validate both specs, or say why not (Ready=False)."""
    name, namespace, _ = object_meta(step.body)
    tenant = tenant_of(namespace)
    tenant_obj = step.platform.read("Tenant", tenant) if tenant else None
    if tenant is None or tenant_obj is None or tenant_namespace(tenant) != namespace:
        step.fail(
            "TenantNotFound",
            f"namespace {namespace!r} is not the home namespace of any Tenant; create the "
            "Sandbox in tenant-<tenant name>, or ask a platform engineer to register the tenant",
            retry=30,
        )
        return None
    try:
        tenant_spec = TenantSpec.model_validate(tenant_obj.get("spec") or {})
        spec = SandboxSpec.model_validate(step.body.get("spec") or {})
    except ValidationError as exc:
        step.fail("InvalidSpec", f"fix the spec: {problems(exc)}")
        return None
    return LoadedSandbox(name, tenant, tenant_obj, tenant_spec, spec)
