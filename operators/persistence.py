"""Where kopf keeps its records of each object, so that handling one costs few writes.

**The diff base**, in the status beside ours.

kopf compares an object with its *diff base* (the object as last handled) to tell a
creation, an update and a restart apart, and records the new one after every handling.
In an annotation, that record is a write of the object of its own, after the status
write: at 2,000 sandboxes applied at once, one API request in every 23, and of the API
server's most expensive kind. In the status it goes out in the status write the
handling makes anyway (kopf sends the status part of its patch to ``/status``).

The field is declared by every kind with change handlers
(:class:`~sandbox.api.meta.HandledStatus`); a CRD without it would prune it, and
every event would then look like a creation (the handlers are the same and idempotent,
so that costs work, not correctness). Objects handled by an older operator carry the
record in the ``regsandbox.io/last-handled-configuration`` annotation: it is read when
the status has none, and removed the first time the record is written to the status.
(The progress storage's ``regsandbox.io/`` prefix keeps it out of the compared essence.)

**Handler progress**, in ``regsandbox.io/<handler>`` annotations as before, but without
kopf's ``regsandbox.io/kopf-managed`` marker. kopf adds the marker with the first
progress it records, and it records progress (then purges it) even for a handler that
succeeds at once, so the marker alone made one more write of every new object. It tells
*other* kopf operators to ignore our annotations; no other operator handles these kinds,
and our own comparisons drop the ``regsandbox.io/`` annotations without it.
"""

from __future__ import annotations

import json

import kopf

_PREFIX = "regsandbox.io"

__all__ = ["LEGACY_ANNOTATION", "STATUS_FIELD", "ProgressAnnotations", "StatusDiffBase"]

STATUS_FIELD = "lastHandledConfiguration"
"""The status field holding the diff base (declared by ``HandledStatus``)."""

LEGACY_ANNOTATION = f"{_PREFIX}/last-handled-configuration"
"""Where operators before this one kept the diff base."""


class StatusDiffBase(kopf.StatusDiffBaseStorage):
    """kopf's status diff-base storage, reading the legacy annotation as a fallback."""

    def __init__(self) -> None:
        """Keep the diff base in ``status.lastHandledConfiguration``."""
        super().__init__(field=f"status.{STATUS_FIELD}")

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        """The diff base from the status, else from the legacy annotation, else None."""
        found = super().fetch(body=body)
        if found is not None:
            return found
        legacy = body.metadata.annotations.get(LEGACY_ANNOTATION)
        if legacy is None:
            return None
        essence: kopf.BodyEssence = json.loads(legacy)
        return essence

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Record ``essence`` in the status; drop the legacy annotation if the object has it."""
        super().store(body=body, patch=patch, essence=essence)
        if LEGACY_ANNOTATION in body.metadata.annotations:
            patch.metadata.annotations[LEGACY_ANNOTATION] = None


class ProgressAnnotations(kopf.AnnotationsProgressStorage):
    """kopf's annotation progress storage under ``regsandbox.io/``, with no marker."""

    def __init__(self) -> None:
        """Keep handler progress in ``regsandbox.io/<handler id>`` annotations."""
        super().__init__(prefix=_PREFIX)

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        """Add nothing: the marker would cost a write of every new object (see above)."""
