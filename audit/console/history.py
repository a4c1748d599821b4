"""The checkpoints the service has served, newest last, for the console's history page.

The log keeps only its latest checkpoint on disk; witnesses, the anchor and the WORM
archive keep the durable history. This is the service's own memory of each distinct
checkpoint it has handed out since it started (bounded), so an officer can see the log
grow and have each past checkpoint's consistency with the current one proven in their
browser. A checkpoint an officer saved earlier can be checked the same way on the page.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from audit.checkpoint import Checkpoint
from audit.note import Note

__all__ = ["CheckpointHistory", "SeenCheckpoint"]


@dataclass(frozen=True)
class SeenCheckpoint:
    """A checkpoint and when the service first served it."""

    checkpoint: Checkpoint
    note: bytes
    first_served: datetime


def _now() -> datetime:
    return datetime.now(UTC)


class CheckpointHistory:
    """Distinct checkpoints in the order first served; thread-safe and bounded."""

    def __init__(self, size: int = 500, *, clock: Callable[[], datetime] = _now) -> None:
        self._seen: deque[SeenCheckpoint] = deque(maxlen=size)
        self._last: bytes | None = None
        self._clock = clock
        self._lock = threading.Lock()

    def observe(self, note: bytes) -> None:
        """Remember ``note`` if it differs from the last one (cheap when it does not)."""
        if note == self._last:
            return
        with self._lock:
            if note == self._last:
                return
            checkpoint = Checkpoint.from_text(Note.parse(note).text)
            self._seen.append(SeenCheckpoint(checkpoint, note, self._clock()))
            self._last = note

    def seen(self) -> list[SeenCheckpoint]:
        """Every remembered checkpoint, oldest first."""
        with self._lock:
            return list(self._seen)
