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


def _custom(name: str, spec: Mapping[str, Any]) -> CustomPolicy:
    return CustomPolicy(
        name=name,
        rego=str(spec.get("rego") or ""),
        data=dict(spec.get("data") or {}),
        enforcement=spec.get("enforcement") or "deny",
        sectors=tuple(spec.get("sectors") or ()),
    )


def _last_accepted(obj: Mapping[str, Any]) -> CustomPolicy | None:
    """The version of ``obj`` in force: its spec if accepted as is, else the last accepted."""
    name = str(obj["metadata"]["name"])
    status = obj.get("status") or {}
    conditions = status.get("conditions")
    accepted = [c for c in conditions or [] if c.get("type") == "Accepted"]
    generation = obj["metadata"].get("generation")
    if is_true(conditions, "Accepted") and accepted[0].get("observedGeneration") == generation:
        return _custom(name, obj.get("spec") or {})
    snapshot = status.get("accepted") or {}
    if snapshot.get("spec"):
        return _custom(name, snapshot["spec"])
    return None


def _accepted_others(platform: Platform, name: str) -> list[CustomPolicy]:
    """Every other SandboxPolicy, each in the version in force (see :func:`_last_accepted`)."""
    others = []
    for obj in list_objects(platform.api, "SandboxPolicy"):
        if obj["metadata"]["name"] == name:
            continue
        policy = _last_accepted(obj)
        if policy is not None:
            others.append(policy)
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
    """Validate and activate one SandboxPolicy; say why not in ``Accepted`` otherwise.

    An invalid edit is refused and the last accepted version of the policy stays in
    force (it is kept in ``status.accepted``), also across operator restarts and the
    reloads that other policies cause: a bad edit never drops a rule.
    """
    meta = body["metadata"]
    name, gen = str(meta["name"]), int(meta.get("generation") or 0)
    status = body.get("status") or {}
    conds = list(status.get("conditions") or [])
    resource = Resource(kind="SandboxPolicy", name=name)
    spec = dict(body.get("spec") or {})
    others = _accepted_others(platform, name)
    try:
        digest = _load(platform, [*others, _custom(name, spec)])
    except PolicyLoadError as exc:
        return _refused(platform, body, others, exc)
    enforcement = spec.get("enforcement") or "deny"
    platform.record(
        "policy.changed",
        resource,
        "success",
        details={"digest": digest, "enforcement": enforcement, "generation": gen},
    )
    conds = set_condition(
        conds, "Accepted", True, "Loaded", f"active in policy set {digest}", generation=gen
    )
    result = StepResult(
        status={
            "conditions": conds,
            "digest": digest,
            "observedGeneration": gen,
            "accepted": {"generation": gen, "spec": spec},
        }
    )
    result.note("Normal", "Loaded", f"policy set is now {digest}")
    return result


def _refused(
    platform: Platform, body: Mapping[str, Any], others: list[CustomPolicy], exc: Exception
) -> StepResult:
    """Say why the new spec was refused, keeping the last accepted version in force."""
    meta = body["metadata"]
    name, gen = str(meta["name"]), int(meta.get("generation") or 0)
    status = body.get("status") or {}
    snapshot = status.get("accepted") or {}
    kept = "the previous policy set stays in force"
    if snapshot.get("spec"):
        # Make sure the last accepted version is loaded: after a restart, or when another
        # policy changed since, the engine may not hold it.
        try:
            _load(platform, [*others, _custom(name, snapshot["spec"])])
            kept = (
                f"generation {snapshot.get('generation')} of this policy, accepted "
                "earlier, stays in force"
            )
        except PolicyLoadError:
            pass
    message = f"not loaded, {kept}: {exc}"
    conds = list(status.get("conditions") or [])
    conds = set_condition(conds, "Accepted", False, "InvalidPolicy", message, generation=gen)
    result = StepResult(status={"conditions": conds, "observedGeneration": gen})
    result.note("Warning", "InvalidPolicy", message[:1000])
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
