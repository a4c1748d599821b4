"""Building blocks shared by every regsandbox API type.

Models use camelCase on the wire (as Kubernetes does) and snake_case in Python;
attribute docstrings become the field descriptions of the generated CRD schemas.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "Condition",
    "ConditionStatus",
    "Duration",
    "DurationTooLong",
    "HandledStatus",
    "Quantity",
    "WireModel",
    "duration_seconds",
    "parse_duration",
    "parse_rfc3339",
    "provider_region",
    "rfc3339",
]

API_GROUP = "regsandbox.io"
"""The API group of every regsandbox resource."""

API_VERSION = "v1alpha1"
"""The served and stored version."""


class WireModel(BaseModel):
    """Base for API models: camelCase aliases, attribute docstrings as descriptions."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="forbid",
        frozen=False,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it goes to the API server: camelCase, no unset optionals."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class HandledStatus(WireModel):
    """Base of the status of a kind whose changes the operator handles.

    ``lastHandledConfiguration`` is the object as the operator last handled it: what
    a change is compared with to tell a creation, an update and a restart apart. It
    lives in the status, not in an annotation, so that recording it goes in the same
    write as the rest of the status: one request fewer per object handled.
    """

    last_handled_configuration: str | None = Field(default=None, exclude=True)
    """The object's spec, labels and annotations when the operator last handled it
    (JSON). Written by the operator's framework beside the status, never by hand."""


_NUMBER = r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
_QUANTITY_PATTERN = rf"^{_NUMBER}(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?{_NUMBER}))?$"


def _quantity_text(value: object) -> object:
    """Kubernetes sends whole quantities as integers; keep them as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    Field(pattern=_QUANTITY_PATTERN),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": _QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
            "x-kubernetes-validations": [
                {"rule": "type(self) != int || self >= 0", "message": "must not be negative"}
            ],
        }
    ),
]
"""A non-negative Kubernetes resource quantity such as ``500m``, ``4``, ``16Gi``."""

_DURATION_PATTERN = r"^([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
_DURATION_RE = re.compile(r"([0-9]+)([wdhms])")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}

Duration = Annotated[str, Field(pattern=_DURATION_PATTERN, min_length=2)]
"""A duration such as ``30d``, ``12h`` or ``1w2d``: weeks, days, hours, minutes, seconds."""


class DurationTooLong(ValueError, OverflowError):  # noqa: N818 - reads as what it is
    """A well-formed :data:`Duration` longer than a timedelta holds (~2.7 million years)."""


def duration_seconds(text: str) -> int:
    """The exact number of seconds in a :data:`Duration`; never overflows.

    Raises:
        ValueError: ``text`` is not a Duration (the grammar the API server enforces).
    """
    if not text or not re.fullmatch(_DURATION_PATTERN, text):
        raise ValueError(f"invalid duration {text!r}: use e.g. 30d, 12h, 1w2d")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_RE.findall(text))


def parse_duration(text: str) -> dt.timedelta:
    """Parse a :data:`Duration` string.

    Raises:
        ValueError: ``text`` is not a Duration.
        DurationTooLong: it is one, too long for a timedelta (also an OverflowError).
    """
    seconds = duration_seconds(text)
    try:
        return dt.timedelta(seconds=seconds)
    except OverflowError as exc:
        raise DurationTooLong(f"duration {text!r} is too long") from exc


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(WireModel):
    """A ``metav1.Condition``: one aspect of the observed state."""

    type: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=316)
    """CamelCase condition type, e.g. ``Ready`` or ``PolicyCompliant``."""
    status: ConditionStatus
    """``True``, ``False`` or ``Unknown``."""
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    """CamelCase machine-readable reason for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details: what happened and what to do about it."""
    observed_generation: int = Field(default=0, ge=0)
    """The ``metadata.generation`` this condition was computed from."""
    last_transition_time: dt.datetime
    """When ``status`` last changed."""


def provider_region(region: str) -> str:
    """The provider's own name of a region-catalogue id: ``aws:eu-central-1`` → ``eu-central-1``.

    Catalogue ids are ``provider:region``; SDKs (S3, KMS) want the bare region.
    """
    return region.split(":", 1)[-1]


def parse_rfc3339(text: str) -> dt.datetime:
    """An RFC 3339 time such as Kubernetes writes (``Z`` or an offset).

    Raises:
        ValueError: ``text`` is not such a time, or has no time zone.
    """
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z for UTC)")
    return parsed


def rfc3339(when: dt.datetime) -> str:
    """``when`` in UTC as ``YYYY-MM-DDTHH:MM:SSZ``, as Kubernetes writes timestamps."""
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
