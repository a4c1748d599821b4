"""The ``model.export`` decision: the operator's destination checks, then policy."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.api.export import ModelExportSpec
from sandbox.artifacts.outbox import ArtifactStore, RegisteredDestination
from sandbox.errors import SandboxError
from sandbox.kube.apply import get
from sandbox.lifecycle.facts import cluster_facts
from sandbox.lifecycle.platform import Platform
from sandbox.policy.manifests import Manifests, build_input
from sandbox.policy.model import Decision, Violation

__all__ = [
    "CODE_DESTINATION_NOT_REGISTERED",
    "CODE_DESTINATION_REGION_MISMATCH",
    "ENGINE_CODES",
    "decide_export",
    "destination_key",
    "destination_uri",
    "engine_down",
    "required_approvals",
    "violations_text",
]

CODE_DESTINATION_NOT_REGISTERED = "EXPORT_DESTINATION_NOT_REGISTERED"
"""The destination bucket is not one the platform registered for exports."""
CODE_DESTINATION_REGION_MISMATCH = "EXPORT_DESTINATION_REGION_MISMATCH"
"""The claimed destination region or endpoint differs from the registered one."""
ENGINE_CODES = ("POLICY_ENGINE_", "POLICY_DECISION_")
"""Violation codes that mean the engine gave no verdict (retry, do not reject)."""


def destination_key(spec: ModelExportSpec) -> str:
    """The object key at the destination: ``destination.key``, or prefix + file name."""
    if spec.destination.key:
        return spec.destination.key
    prefix = spec.destination.prefix
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix + posixpath.basename(spec.artifact.path)


def destination_uri(spec: ModelExportSpec) -> str:
    """``s3://bucket/key`` at the destination."""
    return f"s3://{spec.destination.bucket}/{destination_key(spec)}"


def required_approvals(decision: Decision) -> int:
    """Distinct approvals the decision requires (obligation ``EXPORT_REVIEWS_REQUIRED``)."""
    for obligation in decision.obligations:
        if obligation.code == "EXPORT_REVIEWS_REQUIRED":
            try:
                return max(1, int(obligation.value))
            except (TypeError, ValueError):
                return 1
    return 1


def engine_down(decision: Decision) -> bool:
    """Whether a deny only says the engine could not decide."""
    return any(v.code.startswith(ENGINE_CODES) for v in decision.violations)


def violations_text(decision: Decision) -> str:
    """``CODE: message; ...`` for a condition."""
    return "; ".join(f"{v.code}: {v.msg}" for v in decision.violations)


def _deny(code: str, msg: str, subject: str) -> Decision:
    return Decision(
        allow=False,
        violations=[
            Violation(code=code, msg=msg, regulation="regsandbox export rules", subject=subject)
        ],
    )


def _check_destination(
    store: ArtifactStore, spec: ModelExportSpec, subject: str
) -> RegisteredDestination | Decision:
    """The registered destination, or a deny if the claim does not match it."""
    bucket = spec.destination.bucket
    registered = store.destination(bucket)
    if registered is None:
        return _deny(
            CODE_DESTINATION_NOT_REGISTERED,
            f"bucket {bucket!r} is not a registered export destination",
            subject,
        )
    if spec.destination.region != registered.region:
        return _deny(
            CODE_DESTINATION_REGION_MISMATCH,
            f"bucket {bucket!r} is registered in {registered.region!r}, "
            f"not {spec.destination.region!r}",
            subject,
        )
    endpoint = registered.endpoint or store.settings.endpoint
    if spec.destination.endpoint is not None and spec.destination.endpoint != endpoint:
        return _deny(
            CODE_DESTINATION_REGION_MISMATCH,
            f"bucket {bucket!r} is not served by {spec.destination.endpoint!r}",
            subject,
        )
    return registered


def _export_manifest(
    name: str,
    spec: ModelExportSpec,
    region: str,
    sha256: str | None,
    approvals: Sequence[str] | None,
) -> dict[str, Any]:
    """The ModelExport as policy sees it: the operator's digest, the attested region."""
    return {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": name},
        "spec": {
            "sandbox": spec.sandbox,
            "artifact": {
                "path": spec.artifact.path,
                "kind": spec.artifact.type.value,
                "sha256": sha256,
            },
            # The attested region of the registered bucket, not the claim.
            "destination": {"region": region, "uri": destination_uri(spec)},
            "justification": spec.justification,
            "requester": spec.requested_by,
            "anonymity": spec.anonymity.wire() if spec.anonymity else None,
        },
        "status": {"approvals": list(approvals)} if approvals is not None else {},
    }


def decide_export(
    platform: Platform,
    store: ArtifactStore,
    objects: tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]],
    spec: ModelExportSpec,
    sha256: str | None,
    approvals: Sequence[str] | None,
) -> Decision:
    """The ``model.export`` decision on (tenant, sandbox, export), destination checks first."""
    tenant_obj, sandbox_obj, body = objects
    name = str(body["metadata"]["name"])
    registered = _check_destination(store, spec, f"export/{name}")
    if isinstance(registered, Decision):
        return registered
    manifests = Manifests()
    manifests.add(dict(tenant_obj), "cluster")
    manifests.add(dict(sandbox_obj), "cluster")
    for request in (sandbox_obj.get("spec") or {}).get("datasets") or []:
        dataset = get(platform.api, "Dataset", str(request.get("name")))
        if dataset is not None:
            manifests.add(dataset, "cluster")
    manifests.add(_export_manifest(name, spec, registered.region, sha256, approvals), "cluster")
    try:
        policy_input = build_input(manifests, cluster_facts(platform), action="model.export")
    except (SandboxError, ValueError) as exc:
        return Decision.deny("POLICY_INPUT_INVALID", f"the policy input is invalid: {exc}")
    return platform.decide(policy_input)
