"""The checks: each control's finding, computed from the evidence alone.

Pure functions, no I/O, so that ``sandboxctl evidence pack`` and ``sandboxctl evidence
verify`` run exactly the same code over exactly the same bytes: a pack whose results say
more than its evidence supports fails verification. Order is the log's order (entry
index), which the Merkle tree fixes; timestamps are shown, never trusted for ordering.

A check returns ``satisfied`` with the entries that support it, ``not-satisfied`` with
each entry that breaks it and why, or ``not-applicable`` with the reason (nothing in the
scope the control speaks about).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sandbox.evidence.catalog import Control, load_controls

__all__ = [
    "CHECKS",
    "Finding",
    "LogFacts",
    "Record",
    "Status",
    "assess",
    "entry_item",
    "isolation_item",
]

Status = Literal["satisfied", "not-satisfied", "not-applicable"]

_RESTRICTED = "pod-security.kubernetes.io/enforce"
_ENDS = ("sandbox.expired", "sandbox.deleted")
_CUT = (*_ENDS, "sandbox.quarantined")
_READ_PHASES = ("read", "completed")


def entry_item(index: int) -> str:
    """Evidence item id of audit entry ``index``."""
    return f"entry-{index}"


def isolation_item(namespace: str) -> str:
    """Evidence item id of the cluster snapshot of ``namespace``."""
    return f"cluster-{namespace}"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Record:
    """One audit entry: its index and its parsed JSON (the bytes are in the pack).

    The fields the checks read are taken out once, here; a field of the wrong type
    reads as absent (the entry still counts, and a check that needs it says so).
    """

    index: int
    """The entry's index in the log."""
    doc: Mapping[str, Any]
    """The parsed entry."""
    action: str = field(init=False)
    """The entry's action."""
    resource: Mapping[str, Any] = field(init=False)
    """What was acted on."""
    details: Mapping[str, Any] = field(init=False)
    """Action-specific facts."""
    decision: Mapping[str, Any] | None = field(init=False)
    """The policy decision, if any."""
    actor: Mapping[str, Any] = field(init=False)
    """Who acted."""
    outcome: str = field(init=False)
    """success, failure or denied."""
    sandbox: tuple[str, str] = field(init=False)
    """``(tenant, sandbox)`` of the entry (empty strings when not set)."""
    item: str = field(init=False)
    """Its evidence item id."""

    def __post_init__(self) -> None:
        doc = self.doc
        resource = _mapping(doc.get("resource"))
        decision = doc.get("decision")
        values = {
            "action": str(doc.get("action", "")),
            "resource": resource,
            "details": _mapping(doc.get("details")),
            "decision": decision if isinstance(decision, Mapping) else None,
            "actor": _mapping(doc.get("actor")),
            "outcome": str(doc.get("outcome", "")),
            "sandbox": (str(resource.get("tenant") or ""), str(resource.get("sandbox") or "")),
            "item": entry_item(self.index),
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class LogFacts:
    """What the pack's receipts and checkpoint showed (checked before any finding)."""

    origin: str
    """The log's origin."""
    size: int
    """Tree size of the one checkpoint every receipt leads to."""
    receipts: int
    """Number of entries with a verified receipt."""
    cosigners: tuple[str, ...] = ()
    """Names on the checkpoint's signature lines other than the log's own key."""


@dataclass(frozen=True)
class Finding:
    """The finding for one control."""

    control: str
    """Control id."""
    check: str
    """Check id that decided it."""
    status: Status
    """The verdict."""
    reason: str
    """Why, for a person."""
    supporting: tuple[str, ...] = ()
    """Evidence items that show the control held."""
    violations: tuple[tuple[str, str], ...] = ()
    """``(item, why)`` for each item that shows the control broken."""

    def to_json(self) -> dict[str, Any]:
        """A JSON form (for evidence.json and ``-o json``)."""
        return {
            "control": self.control,
            "check": self.check,
            "status": self.status,
            "reason": self.reason,
            "supporting": list(self.supporting),
            "violations": [{"item": item, "why": why} for item, why in self.violations],
        }


@dataclass
class _Result:
    supporting: list[str] = field(default_factory=list)
    violations: list[tuple[str, str]] = field(default_factory=list)


_Check = Callable[[Sequence[Record], Mapping[str, Mapping[str, Any]], LogFacts], Finding]


def _verdict(control: Control, result: _Result, *, held: str, none: str | None = None) -> Finding:
    if result.violations:
        count = len(result.violations)
        first = result.violations[0][1]
        reason = f"{count} item(s) break it; first: {first}"
        status: Status = "not-satisfied"
    elif not result.supporting and none is not None:
        return Finding(control.id, control.check, "not-applicable", none)
    else:
        reason, status = held, "satisfied"
    return Finding(
        control.id,
        control.check,
        status,
        reason,
        tuple(result.supporting),
        tuple(result.violations),
    )


def _by_sandbox(records: Iterable[Record], *actions: str) -> dict[tuple[str, str], list[Record]]:
    found: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for rec in records:
        if rec.action in actions:
            found[rec.sandbox].append(rec)
    return found


def _allowed(rec: Record) -> bool:
    decision = rec.decision
    digest = str((decision or {}).get("policy_digest") or "")
    return bool(decision and decision.get("allow") is True and digest.startswith("sha256:"))


def _name(key: tuple[str, str]) -> str:
    return f"{key[0]}/{key[1]}"


def check_log_integrity(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], log: LogFacts
) -> Finding:
    """Every entry has a verified receipt against the one checkpoint."""
    if not records:
        return Finding(control.id, control.check, "not-applicable", "no audit entry in scope")
    result = _Result(supporting=[r.item for r in records])
    if log.receipts != len(records):
        result.violations.append(("checkpoint", f"{len(records) - log.receipts} without receipt"))
    witnessed = (
        f"; cosigned by {', '.join(log.cosigners)}" if log.cosigners else "; no witness cosignature"
    )
    held = (
        f"{len(records)} entries, each proven included in checkpoint {log.origin} "
        f"size {log.size}{witnessed}"
    )
    return _verdict(control, result, held=held)


def check_isolation(
    control: Control,
    records: Sequence[Record],
    cluster: Mapping[str, Mapping[str, Any]],
    _: LogFacts,
) -> Finding:
    """Each sandbox was provisioned under an allowing decision; live objects isolate it."""
    result = _Result()
    for key, provs in _by_sandbox(records, "sandbox.provisioned").items():
        for rec in provs:
            if not _allowed(rec):
                result.violations.append((rec.item, f"{_name(key)} provisioned without allow"))
                continue
            result.supporting.append(rec.item)
            namespace = str(rec.details.get("namespace") or "")
            snapshot = cluster.get(namespace)
            if snapshot is None:
                continue
            problems = _isolation_problems(snapshot)
            item = isolation_item(namespace)
            if problems:
                result.violations.append((item, f"namespace {namespace}: {'; '.join(problems)}"))
            else:
                result.supporting.append(item)
    seen = "and the cluster objects read " if cluster else ""
    return _verdict(
        control,
        result,
        held=f"every sandbox provisioned under an allowing policy decision {seen}isolates it",
        none="no sandbox was provisioned in scope",
    )


def _isolation_problems(snapshot: Mapping[str, Any]) -> list[str]:
    if not snapshot.get("exists", True):
        return []  # gone: deletion is judged by keys-destroyed
    problems: list[str] = []
    labels = ((snapshot.get("namespace") or {}).get("metadata") or {}).get("labels") or {}
    if labels.get(_RESTRICTED) != "restricted":
        problems.append("Pod Security enforce label is not 'restricted'")
    deny = False
    for policy in snapshot.get("networkPolicies") or []:
        spec = policy.get("spec") or {}
        types = set(spec.get("policyTypes") or [])
        if spec.get("podSelector") in ({}, None) and {"Ingress", "Egress"} <= types:
            deny = True
    if not deny:
        problems.append("no NetworkPolicy selecting every pod for ingress and egress")
    if not snapshot.get("resourceQuotas"):
        problems.append("no ResourceQuota")
    return problems


def _export_key(rec: Record) -> tuple[str, str, str]:
    res = rec.resource
    return str(res.get("tenant") or ""), str(res.get("namespace") or ""), str(res.get("name"))


def check_exports_reviewed(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], __: LogFacts
) -> Finding:
    """Each release had the required number of distinct approvals, none by the requester."""
    result = _Result()
    required: dict[tuple[str, str, str], int] = {}
    approved: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for rec in records:
        key = _export_key(rec)
        if rec.action == "model.export.policy-checked" and rec.outcome == "success":
            required[key] = int(rec.details.get("required_approvals") or 1)
        elif (
            rec.action == "model.export.reviewed"
            and rec.outcome == "success"
            and rec.details.get("decision") == "approve"
        ):
            approved[key].add(str(rec.actor.get("user") or ""))
        elif rec.action == "model.export.released":
            why = _release_problem(rec, required.get(key), approved[key])
            if why:
                result.violations.append((rec.item, f"export {key[1]}/{key[2]}: {why}"))
            else:
                result.supporting.append(rec.item)
    return _verdict(
        control,
        result,
        held="every release had its required distinct approvals, none by the requester",
        none="no model was released in scope",
    )


def _release_problem(rec: Record, required: int | None, reviewed: set[str]) -> str | None:
    approvers = [str(a) for a in rec.details.get("approvers") or []]
    requester = str(rec.details.get("requester") or "")
    if required is None:
        return "released with no policy check on record"
    needed = max(required, 1)
    if len(set(approvers)) < needed:
        return f"released with {len(set(approvers))} distinct approval(s), {needed} required"
    if requester and requester in approvers:
        return f"the requester {requester} approved their own export"
    missing = sorted(set(approvers) - reviewed)
    if missing:
        return f"approver(s) {', '.join(missing)} have no approving review on record"
    return None


def check_exports_digest(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], __: LogFacts
) -> Finding:
    """Each release carries the digest that policy checked and the release announced."""
    result = _Result()
    checked: dict[tuple[str, str, str], str] = {}
    announced: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for rec in records:
        key = _export_key(rec)
        sha = str(rec.details.get("sha256") or "")
        if rec.action == "model.export.policy-checked" and rec.outcome == "success":
            checked[key] = sha
        elif rec.action == "model.export.releasing":
            announced[key].add(sha)
        elif rec.action == "model.export.released":
            if not sha:
                why = "released without a sha256"
            elif checked.get(key) != sha:
                why = f"sha256 {sha[:16]}… is not the one policy checked"
            elif sha not in announced[key]:
                why = "released without a model.export.releasing entry for that sha256"
            elif not _allowed(rec):
                why = "released without an allowing policy decision"
            else:
                result.supporting.append(rec.item)
                continue
            result.violations.append((rec.item, f"export {key[1]}/{key[2]}: {why}"))
    return _verdict(
        control,
        result,
        held="every release is the artifact policy checked, by digest, under an allowing decision",
        none="no model was released in scope",
    )


def check_keys_destroyed(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], __: LogFacts
) -> Finding:
    """Every sandbox that ended has its provisioned key destroyed."""
    result = _Result()
    keys: dict[tuple[str, str], str] = {}
    destroyed: dict[tuple[str, str], Record] = {}
    ended: set[tuple[str, str]] = set()
    for rec in records:
        if rec.action == "sandbox.provisioned":
            keys[rec.sandbox] = str(rec.details.get("keyId") or "")
            ended.discard(rec.sandbox)
            destroyed.pop(rec.sandbox, None)
        elif rec.action == "key.destroyed" and rec.outcome == "success":
            destroyed[rec.sandbox] = rec
        elif rec.action in _ENDS:
            ended.add(rec.sandbox)
            key_id = keys.get(rec.sandbox)
            done = destroyed.get(rec.sandbox)
            if key_id is None:
                continue  # never provisioned: there was no key
            if done is None:
                why = f"{_name(rec.sandbox)} ended without destroying key {key_id}"
                result.violations.append((rec.item, why))
            elif str(done.details.get("keyId") or "") != key_id:
                other = done.details.get("keyId")
                why = f"{_name(rec.sandbox)}: destroyed key {other}, not {key_id}"
                result.violations.append((done.item, why))
            else:
                result.supporting += [done.item, rec.item]
    running = sorted(_name(k) for k in keys if k not in ended)
    still = f"; still running: {', '.join(running)}" if running else ""
    return _verdict(
        control,
        result,
        held=f"every sandbox that ended had its key destroyed{still}",
        none=f"no sandbox in scope has ended{still}",
    )


def check_reads_within_grant(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], __: LogFacts
) -> Finding:
    """Every successful read happened inside a grant window, before the sandbox ended."""
    result = _Result()
    granted: set[tuple[str, str, str]] = set()
    cut: set[tuple[str, str]] = set()
    for rec in records:
        tenant, sandbox = rec.sandbox
        if rec.action == "sandbox.provisioning":
            cut.discard(rec.sandbox)
        elif rec.action in _CUT:
            cut.add(rec.sandbox)
        elif rec.action == "dataset.granted" and rec.outcome == "success":
            granted.add((tenant, sandbox, str(rec.details.get("dataset"))))
        elif rec.action == "dataset.revoked":
            granted.discard((tenant, sandbox, str(rec.details.get("dataset"))))
        elif _is_read(rec):
            dataset = str(rec.resource.get("name"))
            if rec.sandbox in cut:
                why = f"{_name(rec.sandbox)} read {dataset} after the sandbox ended"
            elif (tenant, sandbox, dataset) not in granted:
                why = f"{_name(rec.sandbox)} read {dataset} without a grant in force"
            else:
                result.supporting.append(rec.item)
                continue
            result.violations.append((rec.item, why))
    return _verdict(
        control,
        result,
        held="every read was of a granted dataset, while the grant and the sandbox were in force",
        none="no dataset was read in scope",
    )


def _is_read(rec: Record) -> bool:
    return (
        rec.action == "dataset.read"
        and rec.outcome == "success"
        and rec.details.get("phase") in _READ_PHASES
    )


def check_reads_logged(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], __: LogFacts
) -> Finding:
    """Every started read is completed in the log, and every read names its workload."""
    result = _Result()
    started: dict[str, Record] = {}
    for rec in records:
        if rec.action != "dataset.read":
            continue
        request = str(rec.doc.get("request_id") or "")
        phase = rec.details.get("phase")
        if phase == "started":
            started[request] = rec
        elif phase == "completed":
            started.pop(request, None)
        if _is_read(rec):
            actor = rec.actor
            if not (actor.get("service_account") or actor.get("user")):
                result.violations.append((rec.item, "read by an unidentified workload"))
            elif "bytes" not in rec.details:
                result.violations.append((rec.item, "read logged without the bytes served"))
            else:
                result.supporting.append(rec.item)
    for request, rec in started.items():
        result.violations.append((rec.item, f"read {request} started and never logged as ended"))
    result.violations.sort(key=lambda v: int(v[0].rpartition("-")[2]))
    return _verdict(
        control,
        result,
        held="every read is logged with the workload, the bytes served and, once ended, its end",
        none="no dataset was read in scope",
    )


def check_per_sandbox_key(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], __: LogFacts
) -> Finding:
    """Every sandbox has its own key and an encrypted storage class."""
    result = _Result()
    owner: dict[str, tuple[str, str]] = {}
    for rec in records:
        if rec.action != "sandbox.provisioned":
            continue
        key_id = str(rec.details.get("keyId") or "")
        if not key_id:
            result.violations.append((rec.item, f"{_name(rec.sandbox)} provisioned without a key"))
        elif owner.setdefault(key_id, rec.sandbox) != rec.sandbox:
            why = f"{_name(rec.sandbox)} shares key {key_id} with {_name(owner[key_id])}"
            result.violations.append((rec.item, why))
        elif not rec.details.get("storageClass"):
            why = f"{_name(rec.sandbox)} provisioned without an encrypted storage class"
            result.violations.append((rec.item, why))
        else:
            result.supporting.append(rec.item)
    return _verdict(
        control,
        result,
        held="every sandbox has a key of its own and an encrypted storage class",
        none="no sandbox was provisioned in scope",
    )


_DECIDED = ("dataset.granted", "sandbox.provisioned", "model.export.released")


def check_decisions_recorded(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], __: LogFacts
) -> Finding:
    """Every grant, provisioning and release carries an allowing, digest-identified decision."""
    result = _Result()
    for rec in records:
        if rec.action not in _DECIDED:
            continue
        if _allowed(rec):
            result.supporting.append(rec.item)
        else:
            why = f"{rec.action} without an allowing decision and policy digest"
            result.violations.append((rec.item, why))
    return _verdict(
        control,
        result,
        held="every grant, provisioning and release was allowed by an identified policy bundle",
        none="no grant, provisioning or release in scope",
    )


def check_actors_identified(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], __: LogFacts
) -> Finding:
    """Every successful action names who did it."""
    result = _Result()
    for rec in records:
        if rec.outcome != "success":
            continue
        if rec.actor.get("user") or rec.actor.get("service_account"):
            result.supporting.append(rec.item)
        else:
            result.violations.append((rec.item, f"{rec.action} by an unidentified actor"))
    return _verdict(
        control,
        result,
        held="every successful action names an authenticated user or workload",
        none="no successful action in scope",
    )


def check_lifecycle_retained(
    control: Control, records: Sequence[Record], _: Mapping[str, Mapping[str, Any]], __: LogFacts
) -> Finding:
    """Each sandbox's history is in the pack from its provisioning on."""
    result = _Result()
    started: set[tuple[str, str]] = set()
    reported: set[tuple[str, str]] = set()
    for rec in records:
        key = rec.sandbox
        if not key[1]:
            continue
        if rec.action in ("sandbox.provisioning", "sandbox.provisioned"):
            started.add(key)
            result.supporting.append(rec.item)
        elif key not in started and key not in reported and rec.action != "sandbox.denied":
            reported.add(key)
            why = f"{_name(key)}: {rec.action} with no provisioning entry before it"
            result.violations.append((rec.item, why))
    return _verdict(
        control,
        result,
        held="every sandbox's history is kept from its provisioning on",
        none="no sandbox activity in scope",
    )


CHECKS: dict[str, Callable[..., Finding]] = {
    "log-integrity": check_log_integrity,
    "isolation": check_isolation,
    "exports-reviewed": check_exports_reviewed,
    "exports-digest": check_exports_digest,
    "keys-destroyed": check_keys_destroyed,
    "reads-within-grant": check_reads_within_grant,
    "reads-logged": check_reads_logged,
    "per-sandbox-key": check_per_sandbox_key,
    "decisions-recorded": check_decisions_recorded,
    "actors-identified": check_actors_identified,
    "lifecycle-retained": check_lifecycle_retained,
}
"""Check id (as named in the catalogue) → function."""


def assess(
    records: Sequence[Record],
    cluster: Mapping[str, Mapping[str, Any]],
    log: LogFacts,
    controls: Sequence[Control] | None = None,
) -> list[Finding]:
    """One finding per control, in catalogue order.

    ``records`` must be in index order. Raises ``KeyError`` for a control whose check
    this version does not implement (the catalogue and the code ship together).
    """
    return [
        CHECKS[control.check](control, records, cluster, log)
        for control in (controls or load_controls())
    ]
