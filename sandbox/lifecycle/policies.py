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
from sandbox.api.sandboxpolicy import AcceptedPolicy, SandboxPolicySpec, SandboxPolicyStatus
from sandbox.kube.apply import list_objects
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.lifecycle.step import Step, read_status
from sandbox.policy.policyset import CustomPolicy, PolicyLoadError

__all__ = ["reconcile_sandbox_policy", "remove_sandbox_policy"]

_PolicyStep = Step[SandboxPolicyStatus]


def _custom(name: str, spec: Mapping[str, Any]) -> CustomPolicy:
    return CustomPolicy(
        name=name,
        rego=str(spec.get("rego") or ""),
        data=dict(spec.get("data") or {}),
        enforcement=spec.get("enforcement") or "deny",
        sectors=tuple(spec.get("sectors") or ()),
    )


def _snapshot(status: SandboxPolicyStatus) -> dict[str, Any]:
    """``status.accepted.spec``: the last version accepted, in its wire form (or empty)."""
    return status.accepted.spec.wire() if status.accepted is not None else {}


def _last_accepted(obj: Mapping[str, Any]) -> CustomPolicy | None:
    """The version of ``obj`` in force: its spec if accepted as is, else the last accepted."""
    name = str(obj["metadata"]["name"])
    status = read_status(SandboxPolicyStatus, obj)
    accepted = next((c for c in status.conditions if c.type == "Accepted"), None)
    generation = obj["metadata"].get("generation")
    if accepted and accepted.status == "True" and accepted.observed_generation == generation:
        return _custom(name, obj.get("spec") or {})
    snapshot = _snapshot(status)
    return _custom(name, snapshot) if snapshot else None


def _listed(platform: Platform) -> dict[str, CustomPolicy]:
    """Every SandboxPolicy in the version in force as the API server shows it."""
    found: dict[str, CustomPolicy] = {}
    for obj in list_objects(platform.api, "SandboxPolicy"):
        policy = _last_accepted(obj)
        if policy is not None:
            found[policy.name] = policy
    return found


def _change(platform: Platform, name: str, policy: CustomPolicy | None) -> str:
    """Put ``policy`` in force as ``name`` beside every other policy in force."""
    return platform.policy_state.change(platform.engine, name, policy, _listed(platform))


def reconcile_sandbox_policy(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Validate and activate one SandboxPolicy; say why not in ``Accepted`` otherwise.

    An invalid edit is refused and the last accepted version of the policy stays in
    force (it is kept in ``status.accepted``), also across operator restarts and the
    reloads that other policies cause: a bad edit never drops a rule.
    """
    name = str(body["metadata"]["name"])
    step = Step(
        platform,
        body,
        SandboxPolicyStatus,
        Resource(kind="SandboxPolicy", name=name),
        audit_condition=None,  # a refusal is raised: kopf retries, Accepted stays
    )
    spec = dict(body.get("spec") or {})
    try:
        digest = _change(platform, name, _custom(name, spec))
    except PolicyLoadError as exc:
        _refused(step, name, exc)
    else:
        _loaded(step, spec, digest)
    return step.finish()


def _loaded(step: _PolicyStep, spec: dict[str, Any], digest: str) -> None:
    """Record the new policy set, then show it as accepted."""
    gen = step.generation
    step.log(
        "policy.changed",
        "success",
        digest=digest,
        enforcement=spec.get("enforcement") or "deny",
        generation=gen,
    )
    step.cond("Accepted", True, "Loaded", f"active in policy set {digest}")
    step.status.digest = digest
    step.status.observed_generation = gen
    step.status.accepted = AcceptedPolicy(
        generation=gen, spec=SandboxPolicySpec.model_validate(spec)
    )
    step.note("Normal", "Loaded", f"policy set is now {digest}")


def _refused(step: _PolicyStep, name: str, exc: Exception) -> None:
    """Say why the new spec was refused, keeping the last accepted version in force."""
    snapshot, accepted = _snapshot(step.previous), step.previous.accepted
    kept = "the previous policy set stays in force"
    if snapshot and accepted is not None:
        # Make sure the last accepted version is loaded: after a restart, or when another
        # policy changed since, the engine may not hold it.
        try:
            _change(step.platform, name, _custom(name, snapshot))
            kept = f"generation {accepted.generation} of this policy, accepted earlier,"
            kept += " stays in force"
        except PolicyLoadError:
            pass
    message = f"not loaded, {kept}: {exc}"
    step.cond("Accepted", False, "InvalidPolicy", message)
    step.status.observed_generation = step.generation
    step.note("Warning", "InvalidPolicy", message[:1000])


def remove_sandbox_policy(platform: Platform, body: Mapping[str, Any]) -> StepResult:
    """Drop a deleted SandboxPolicy from the policy set and record the change."""
    name = str(body["metadata"]["name"])
    resource = Resource(kind="SandboxPolicy", name=name)
    step = Step(platform, body, SandboxPolicyStatus, resource, audit_condition=None)
    step.log("policy.changed", "success", digest=_change(platform, name, None), removed=True)
    return step.finish()
