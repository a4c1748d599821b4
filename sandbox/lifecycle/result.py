"""What a lifecycle step tells the operator glue to do."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["EventNote", "StepResult"]


@dataclass(frozen=True)
class EventNote:
    """A Kubernetes Event to post on the object."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class StepResult:
    """Status to merge, events to post, and whether to try again.

    ``retry_after`` set means the step did not finish (a transient failure, or waiting
    for something such as a namespace to disappear); the glue raises
    ``kopf.TemporaryError`` after writing the status, so a person can see why.
    """

    status: dict[str, Any] = field(default_factory=dict)
    events: list[EventNote] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    retry_reason: str = ""

    def note(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        """Queue an Event."""
        self.events.append(EventNote(type_, reason, message))

    def retry(self, after: float, reason: str) -> StepResult:
        """Mark the step unfinished; returns self for chaining."""
        self.retry_after = after
        self.retry_reason = reason
        return self
