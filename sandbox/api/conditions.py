"""The condition helper: set ``metav1.Condition`` entries idempotently.

Conditions are a list-map keyed by ``type``. Setting a condition replaces only the
entry of that type; ``lastTransitionTime`` moves only when ``status`` changes, so
re-running a reconcile that reaches the same verdict changes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

from sandbox.api.meta import ConditionStatus, rfc3339

__all__ = ["find_condition", "is_true", "set_condition"]


def _now() -> str:
    return rfc3339(dt.datetime.now(dt.UTC))


def set_condition(
    conditions: Iterable[Mapping[str, Any]] | None,
    type_: str,
    status: ConditionStatus | bool,
    reason: str,
    message: str = "",
    *,
    generation: int = 0,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """Return a new condition list with ``type_`` set; other entries are kept as they are."""
    status_text: ConditionStatus = (
        ("True" if status else "False") if isinstance(status, bool) else status
    )
    result: list[dict[str, Any]] = []
    previous: Mapping[str, Any] | None = None
    for cond in conditions or ():
        if cond.get("type") == type_:
            previous = cond
        else:
            result.append(dict(cond))
    transition = (
        previous["lastTransitionTime"]
        if previous and previous.get("status") == status_text and previous.get("lastTransitionTime")
        else (now or _now())
    )
    result.append(
        {
            "type": type_,
            "status": status_text,
            "reason": reason,
            "message": message,
            "observedGeneration": generation,
            "lastTransitionTime": transition,
        }
    )
    return sorted(result, key=lambda c: str(c.get("type")))


def find_condition(
    conditions: Iterable[Mapping[str, Any]] | None, type_: str
) -> Mapping[str, Any] | None:
    """The condition of ``type_``, or None."""
    return next((c for c in conditions or () if c.get("type") == type_), None)


def is_true(conditions: Iterable[Mapping[str, Any]] | None, type_: str) -> bool:
    """Whether the condition of ``type_`` exists and is ``True``."""
    cond = find_condition(conditions, type_)
    return cond is not None and cond.get("status") == "True"
