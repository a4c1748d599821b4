"""SandboxPolicy objects: custom Rego loaded beside the built-in policies.

A SandboxPolicy is checked by loading the whole resulting policy set into the live
engine: engines load atomically, so an invalid module is refused with the compiler's
message and the previous set stays in force. Every accepted change is recorded in the
audit log with the new digest; sandboxes notice the new digest on their next resync
and are decided again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from audit.entry import Resource
from sandbox.api.conditions import is_true, set_condition
from sandbox.kube.apply import list_objects
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.policy.policyset import CustomPolicy, PolicyLoadError

__all__ = ["reconcile_sandbox_policy", "remove_sandbox_policy"]


def _custom(obj: Mapping[str, Any]) -> CustomPolicy:
    spec = obj.get("spec") or {}
    return CustomPolicy(
        name=str(obj["metadata"]["name"]),
        rego=str(spec.get("rego") or ""),
        data=dict(spec.get("data") or {}),
        enforcement=spec.get("enforcement") or "deny",
        sectors=tuple(spec.get("sectors") or ()),
    )


def _accepted_others(platform: Platform, name: str) -> list[CustomPolicy]:
    """Every other SandboxPolicy whose current generation was accepted."""
    others = []
    for obj in list_objects(platform.api, "SandboxPolicy"):
        if obj["metadata"]["name"] == name:
            continue
        status = obj.get("status") or {}
        generation = obj["metadata"].get("generation")
        conditions = status.get("conditions")
        accepted = [c for c in conditions or [] if c.get("type") == "Accepted"]
        if is_true(conditions, "Accepted") and accepted[0].get("observedGeneration") == generation:
            others.append(_custom(obj))
    return others


def _load(platform: Platform, policies: list[CustomPolicy]) -> str:
    """Load built-in + ``policies`` into the engine; return the new digest."""
    if platform.base_policies is None:
        raise PolicyLoadError("the operator has no built-in policy set loaded")
    candidate = platform.base_policies.with_custom(policies)
    platform.engine.load(candidate)
    platform.policies = candidate
    return candidate.digest


def reconcile_sandbox_policy(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Validate and activate one SandboxPolicy; say why not in ``Accepted`` otherwise."""
    meta = body["metadata"]
    name, gen = str(meta["name"]), int(meta.get("generation") or 0)
    conds = list((body.get("status") or {}).get("conditions") or [])
    resource = Resource(kind="SandboxPolicy", name=name)
    try:
        digest = _load(platform, [*_accepted_others(platform, name), _custom(body)])
    except PolicyLoadError as exc:
        message = f"not loaded, the previous policy set stays in force: {exc}"
        conds = set_condition(conds, "Accepted", False, "InvalidPolicy", message, generation=gen)
        result = StepResult(status={"conditions": conds, "observedGeneration": gen})
        result.note("Warning", "InvalidPolicy", message[:1000])
        return result
    enforcement = (body.get("spec") or {}).get("enforcement") or "deny"
    platform.record(
        "policy.changed",
        resource,
        "success",
        details={"digest": digest, "enforcement": enforcement, "generation": gen},
    )
    conds = set_condition(
        conds, "Accepted", True, "Loaded", f"active in policy set {digest}", generation=gen
    )
    result = StepResult(status={"conditions": conds, "digest": digest, "observedGeneration": gen})
    result.note("Normal", "Loaded", f"policy set is now {digest}")
    return result


def remove_sandbox_policy(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Drop a deleted SandboxPolicy from the policy set and record the change."""
    name = str(body["metadata"]["name"])
    digest = _load(platform, _accepted_others(platform, name))
    platform.record(
        "policy.changed",
        Resource(kind="SandboxPolicy", name=name),
        "success",
        details={"digest": digest, "removed": True},
    )
    return StepResult()
