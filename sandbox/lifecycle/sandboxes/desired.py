"""Every object of a sandbox, and the order they are written in."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client.rest import ApiException

from sandbox.api.sandbox import SandboxSpec
from sandbox.api.tenant import TenantSpec
from sandbox.keys.base import KeyProviderError, KeyRef
from sandbox.kube.apply import api_message, apply, create_or_apply
from sandbox.kube.quota import (
    Write,
    claims_usage,
    recount,
    seed_usage,
    write_admitted,
)
from sandbox.kube.versions import VersionIndex
from sandbox.lifecycle.drift import holds
from sandbox.lifecycle.platform import Platform
from sandbox.provision.names import managed_labels, sandbox_id, sandbox_namespace
from sandbox.provision.s3_client_env import S3ClientSettings, s3_client_configmap
from sandbox.provision.sandbox_plan import effective_quota, isolation_objects
from sandbox.storage.profiles import assert_encrypted, storage_class_name, workspace_pvc

__all__ = ["WriteRefusedError", "desired_objects", "write_all"]


_APPLY_ORDER = {
    kind: rank
    for rank, kind in enumerate(
        (
            "Namespace",
            "StorageClass",
            "LimitRange",
            "NetworkPolicy",
            "Secret",
            "ConfigMap",
            "ServiceAccount",
            "PersistentVolumeClaim",
            "ResourceQuota",
            "RoleBinding",
        )
    )
}
"""The order a sandbox's objects are written in.

The members' RoleBinding comes last, so nobody can act in the namespace before its
isolation, limits and quota are in place. The ResourceQuota comes right after the
workspace claim, and a quota the operator has just created gets its usage from the
operator — the claim, nothing else — instead of waiting for the quota controller, whose
first count comes seconds late in a burst and can count a claim out from a lagging
cache (see :mod:`sandbox.kube.quota`). The claim needs no charge at admission: it is
sized to the quota, and nobody else can write in the namespace yet. The drift check
recounts a quota that still misses it. The LimitRange comes early so that admission of
the claim finds it without a live lookup.
"""
_APPLY_LATE = _APPLY_ORDER["ServiceAccount"]


class WriteRefusedError(Exception):
    """The API server refused one of the sandbox's objects; says which, and why."""

    def __init__(self, obj: Mapping[str, Any], exc: ApiException) -> None:
        what = f"{obj['kind']} {obj['metadata']['name']}"
        super().__init__(f"the API server refused {what}: {api_message(exc)}")


_HALT_BEFORE = os.environ.get("REGSANDBOX_TEST_HALT_BEFORE", "")
"""Crash tests only: ``Kind:/path/to/marker`` makes a first provisioning stop for good
just before writing its first object of that kind, after creating the marker file, so
that a test can SIGKILL the operator at a known point. Unset in every real deployment."""


def _halt_here(kind: str) -> None:
    wanted, _, marker = _HALT_BEFORE.partition(":")
    if wanted == kind and marker:
        Path(marker).touch()
        threading.Event().wait()  # until the process is killed


def write_all(
    api: ApiClient,
    objects: list[dict[str, Any]],
    *,
    first: bool,
    versions: VersionIndex | None = None,
) -> None:
    """Write a sandbox's objects in order: created on a first provisioning, else applied.

    A refusal on a first provisioning says which object was refused; while
    re-converging, the API error is raised as it is (the sandbox stays as it was).
    Each object the API server's answer shows holding what was written is vouched
    for in ``versions``, so the next drift check need not read it back.
    """
    write = create_or_apply if first else apply
    # The desired quota, for the recount of an overcharged create (it may exist already).
    quota = next((obj for obj in objects if obj["kind"] == "ResourceQuota"), None)
    claims: list[dict[str, Any]] = []
    for obj in objects:
        if first and _HALT_BEFORE:
            _halt_here(obj["kind"])
        written = _write_one(write, api, obj, first=first, quota=quota)
        if obj["kind"] == "PersistentVolumeClaim":
            claims.append(obj)
        if obj["kind"] == "ResourceQuota":
            # Just created (no usage yet, else seed_usage leaves it): it counts the claim
            # from now on. Not vouched for: the drift check reads it until the API server
            # shows it counting.
            if first and isinstance(written, dict):
                seed_usage(api, written, claims_usage(claims))
        elif versions is not None and isinstance(written, dict) and holds(obj, written):
            versions.vouch(obj, written)


def _write_one(
    write: Write,
    api: ApiClient,
    obj: dict[str, Any],
    *,
    first: bool,
    quota: dict[str, Any] | None,
) -> Any:
    """Write one object (see :func:`write_all`); what the API server answered."""
    try:
        try:
            return write_admitted(write, api, obj)
        except ApiException as exc:
            if not (first and quota is not None and _overcharged(exc)):
                raise
            # A create the quota was charged for never landed: an operator killed
            # while its request was in flight (the API server charges the quota in
            # admission, then drops the write with the cancelled request). The
            # controller only recounts on its full resync; have it count now.
            recount(api, quota)
            return write_admitted(write, api, obj)
    except ApiException as exc:
        if not first:
            raise
        raise WriteRefusedError(obj, exc) from exc


def _overcharged(exc: ApiException) -> bool:
    """A create refused as over quota (``create_or_apply`` found no such object)."""
    return exc.status == 403 and "exceeded quota" in str(exc.body or "")


def desired_objects(
    platform: Platform,
    body: Mapping[str, Any],
    tenant: str,
    tenant_spec: TenantSpec,
    spec: SandboxSpec,
    key: KeyRef | None = None,
) -> list[dict[str, Any]]:
    """Every object of an allowed sandbox, in apply order (the key must exist)."""
    name = str(body["metadata"]["name"])
    sid = sandbox_id(tenant, name)
    ns = sandbox_namespace(tenant, name)
    quota = effective_quota(spec, tenant_spec.quota)
    objects = isolation_objects(
        name, tenant, tenant_spec, spec, quota, spec.egress, platform.isolation
    )
    key = key or platform.keys.get(sid)
    if key is None:
        raise KeyProviderError(f"sandbox {sid!r} has no key")
    data_key = None
    if getattr(platform.storage, "kind", "") == "longhorn":
        data_key = platform.keys.data_key(sid)  # type: ignore[attr-defined]
    storage = platform.storage.render(key, ns, data_key)
    assert_encrypted(storage.storage_class)
    objects.append(storage.storage_class)
    objects.extend(storage.secrets)
    objects.append(workspace_pvc(sid, ns, quota.storage, storage_class_name(sid)))
    gateway = platform.isolation
    if gateway.gateway_url is not None:  # the S3 client environment (envFrom)
        where = S3ClientSettings(gateway.gateway_url, gateway.gateway_s3_region)
        labels = managed_labels(tenant=tenant, sandbox=name)
        objects.append(s3_client_configmap(ns, where, labels))
    # sorted() is stable: objects of one kind (the NetworkPolicies) keep their order.
    return sorted(objects, key=lambda obj: _APPLY_ORDER.get(obj["kind"], _APPLY_LATE))
