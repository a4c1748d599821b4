"""Drift: whether a live object still holds what the operator set on it."""

from __future__ import annotations

from typing import Any

__all__ = ["holds"]


def holds(desired: Any, live: Any) -> bool:
    """Whether every field the operator sets has its value in the live object.

    Fields the API server or controllers add (defaults, finalizers, status) are
    ignored; lists must match element by element.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            key in live and holds(value, live[key]) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(desired) == len(live)
            and all(holds(d, v) for d, v in zip(desired, live, strict=True))
        )
    return bool(desired == live)
