"""One reconcile step: the typed status it builds, and the audit events that must come first.

Every reconcile (Tenant, Sandbox, ModelExport, SandboxPolicy) follows one rule: an
audit event is durable before the status that shows its effect is written. A
:class:`Step` makes that rule structural instead of a habit of each branch:

- the status is a typed model from :mod:`sandbox.api` (``step.status``), so a renamed
  field is a mypy error, and only the fields a step sets are written (a merge patch);
- events are queued with :meth:`Step.log` and appended in one batch by
  :meth:`Step.commit`, each with the reconcile's id as its ``request_id``; the only way
  out of a step, :meth:`Step.finish`, commits first;
- when the log cannot take a batch, the status falls back to what was last on record
  (the last successful commit), the step's audit condition says ``AuditLogUnavailable``,
  and the step is retried — the unrecorded change is never shown.

A stage that must not act before its intent is on record (create a namespace, copy an
artifact) calls :meth:`Step.commit` and stops when it returns None.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Generic, Literal, TypeVar

from pydantic import ValidationError

from audit.entry import Actor, Event, Outcome, Resource
from audit.errors import AuditError
from sandbox.api.conditions import is_true, set_condition
from sandbox.api.meta import Condition, ConditionStatus, WireModel
from sandbox.lifecycle.decisions import audit_decision
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.result import StepResult
from sandbox.logs import bind_request_id
from sandbox.policy.model import Decision

__all__ = ["AUDIT_DOWN", "AUDIT_RETRY_SECONDS", "Outcome", "Step", "read_status"]

AUDIT_DOWN: tuple[type[Exception], ...] = (AuditError, OSError)
"""What an audit sink raises when it cannot make an entry durable."""
AUDIT_RETRY_SECONDS = 15.0
"""How soon a step whose events were not recorded is tried again."""

StatusT = TypeVar("StatusT", bound=WireModel)


def read_status(model: type[StatusT], body: Mapping[str, Any]) -> StatusT:
    """The object's status as ``model``; a field that does not parse is left unset.

    Status is written only by the operator, through the same model, so a field that
    does not parse is a leftover of an older version: it is ignored, not fatal.
    """
    raw = dict(body.get("status") or {})
    try:
        return model.model_validate(raw)
    except ValidationError:
        pass
    known = {(f.alias or name): name for name, f in model.model_fields.items()}
    kept: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            continue
        try:
            model.model_validate({key: value})
        except ValidationError:
            continue
        kept[key] = value
    return model.model_validate(kept)


def _conditions(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [dict(c) for c in (body.get("status") or {}).get("conditions") or []]


class Step(Generic[StatusT]):
    """The status being built for one reconcile of one object, and what it must log first.

    ``status`` starts empty (only what the step sets is written) or, with
    ``carry=True``, as the previous status (the whole status is written back).
    ``previous`` is the status as read. ``audit_condition`` is the condition that says
    ``AuditLogUnavailable`` when the log refuses a batch; with None the refusal is
    raised instead and no status is written at all (for steps whose condition must not
    change because the log is down, such as a drift check of a Ready sandbox).
    """

    def __init__(
        self,
        platform: Platform,
        body: Mapping[str, Any],
        model: type[StatusT],
        resource: Resource,
        *,
        audit_condition: str | None = "Ready",
        carry: bool = False,
    ) -> None:
        meta = body["metadata"]
        self.platform = platform
        self.body = body
        self.resource = resource
        self.generation = int(meta.get("generation") or 0)
        self.previous: StatusT = read_status(model, body)
        self.status: StatusT = self.previous.model_copy(deep=True) if carry else model()
        self.conds: list[dict[str, Any]] = _conditions(body)
        self.result = StepResult()
        self._audit_condition = audit_condition
        self._events: list[Event] = []
        self._on_record: tuple[StatusT, list[dict[str, Any]]] = (
            self.status.model_copy(deep=True),
            list(self.conds),
        )
        self._touched: set[str] = set()
        self._failed = False
        self.reconcile_id = uuid.uuid4().hex
        """This reconcile's id: the ``request_id`` of the entries it logs (unless set),
        and of every process log line from here to :meth:`finish`."""
        self._unbind_logs = bind_request_id(self.reconcile_id)

    # -- building --------------------------------------------------------------------

    def cond(
        self, type_: str, status: ConditionStatus | bool, reason: str, message: str = ""
    ) -> None:
        """Set one condition (idempotently: its transition time moves only on change)."""
        self.conds = set_condition(
            self.conds, type_, status, reason, message, generation=self.generation
        )
        self._touched.add(type_)

    def is_true(self, type_: str) -> bool:
        """Whether the condition ``type_`` is True, as built so far."""
        return is_true(self.conds, type_)

    def was_true(self, type_: str) -> bool:
        """Whether the condition ``type_`` was True in the status as read."""
        return is_true(_conditions(self.body), type_)

    def previous_reasons(self) -> set[str]:
        """Every condition reason in the status as read."""
        return {str(c.get("reason")) for c in _conditions(self.body)}

    def log(
        self,
        action: str,
        outcome: Outcome,
        *,
        actor: Actor | None = None,
        policy: Decision | None = None,
        event_id: str | None = None,
        **details: Any,
    ) -> None:
        """Queue an audit event about this object (details that are None are left out).

        ``policy`` is the policy decision behind the action, recorded as the entry's
        ``decision``; keyword details go to the entry's ``details``. An ``event_id``
        that a retry of the same step derives again makes the log keep one entry
        (it answers a repeated id with the index it has).
        """
        self._events.append(
            Event(
                actor=actor or self.platform.actor,
                action=action,
                resource=self.resource,
                outcome=outcome,
                decision=audit_decision(policy) if policy is not None else None,
                details={k: v for k, v in details.items() if v is not None},
                **({"event_id": event_id} if event_id else {}),
            )
        )

    def queue(self, events: Iterable[Event]) -> None:
        """Queue audit events built elsewhere (grant changes, revocations)."""
        self._events.extend(events)

    def note(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        """Queue a Kubernetes Event (posted with the status)."""
        self.result.note(type_, reason, message)

    def retry(self, after: float, reason: str) -> None:
        """Mark the step unfinished: the status is written, then the step runs again."""
        self.result.retry(after, reason)

    @property
    def touched(self) -> frozenset[str]:
        """The condition types this step has set."""
        return frozenset(self._touched)

    @property
    def failed(self) -> bool:
        """Whether the audit log refused a batch of this step (nothing more may happen)."""
        return self._failed

    # -- committing ------------------------------------------------------------------

    def commit(self) -> list[int] | None:
        """Make the queued events durable; None if the log refused them.

        On success, the status built so far becomes what is on record (what a later
        refusal falls back to) and the entries' indices are returned. On refusal, the
        status goes back to what was on record and says why; the step is over.
        """
        if self._failed:
            return None
        indices: list[int] = []
        if self._events:
            try:
                indices = self.platform.record_many(
                    [
                        e
                        if e.request_id
                        else e.model_copy(update={"request_id": self.reconcile_id})
                        for e in self._events
                    ]
                )
            except AUDIT_DOWN as exc:
                if self._audit_condition is None:
                    raise
                self._unrecorded(exc, self._audit_condition)
                return None
            self._events = []
        self._on_record = (self.status.model_copy(deep=True), list(self.conds))
        return indices

    def _unrecorded(self, exc: Exception, condition: str) -> None:
        message = f"the audit log is unavailable, nothing more was done: {exc}"
        status, conds = self._on_record
        self._failed = True
        self._events = []
        self.status = status.model_copy(deep=True)
        self.conds = conds
        self.cond(condition, False, "AuditLogUnavailable", message)
        self.result = StepResult()
        self.note("Warning", "AuditLogUnavailable", message)
        self.retry(AUDIT_RETRY_SECONDS, message)

    def finish(self) -> StepResult:
        """Commit what is queued, then return the status to write and the events to post."""
        self.commit()
        if self._touched or "conditions" in self.status.model_fields_set:
            self.status.conditions = [  # type: ignore[attr-defined]
                Condition.model_validate(c) for c in self.conds
            ]
        self.result.status = self.status.model_dump(mode="json", by_alias=True, exclude_unset=True)
        self._unbind_logs()
        return self.result
