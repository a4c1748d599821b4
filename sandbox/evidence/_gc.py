"""Pausing Python's cycle collector while a pack's entries are parsed and checked."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["cycle_collection_paused"]


@contextmanager
def cycle_collection_paused() -> Iterator[None]:
    """Pause the cycle collector, and restore it as it was.

    A pack of 100,000 entries is 100,000 parsed JSON documents — millions of small,
    acyclic objects that reference counting frees. The cycle collector would rescan them
    again and again as they are made (a third of verify's time); nothing is lost by
    pausing it for the length of one pack or verification.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
