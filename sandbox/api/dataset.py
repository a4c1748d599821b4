"""Dataset: regulated data registered by the platform (cluster-scoped, data stewards)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from sandbox.api.meta import Condition, WireModel
from sandbox.api.tenant import Sector

__all__ = ["DatasetLocation", "DatasetSpec", "DatasetStatus", "PersonalData", "Retention"]


class PersonalData(StrEnum):
    """How much personal data a dataset holds (GDPR terms)."""

    none = "none"
    anonymised = "anonymised"
    pseudonymised = "pseudonymised"
    personal = "personal"
    special_category = "special-category"


class DatasetLocation(WireModel):
    """Where the objects live; only the dataset gateway holds credentials for it."""

    bucket: str = Field(min_length=3, max_length=63)
    """S3 bucket."""
    prefix: str = Field(default="", max_length=1024)
    """Key prefix of the dataset inside the bucket (no leading slash)."""
    region: str = Field(min_length=1)
    """Region id from the policy region catalogue, e.g. ``eu-central-1`` or ``lu-national-1``."""
    endpoint: str | None = None
    """S3 endpoint URL when not AWS (e.g. an on-premise object store)."""


class Retention(WireModel):
    """A retention period."""

    days: int | None = Field(default=None, ge=1)
    """Days; unset means the platform default."""


class DatasetSpec(WireModel):
    """Desired state of a Dataset."""

    description: str = ""
    """What the data is."""
    location: DatasetLocation
    """Where the data is stored."""
    sector: Sector
    """Sector whose rules govern the data."""
    jurisdiction: str = Field(pattern=r"^[A-Z]{2}$")
    """ISO 3166-1 alpha-2 country whose law governs the data."""
    personal_data: PersonalData
    """Class of personal data held."""
    allowed_purposes: list[str] = Field(default_factory=list)
    """Purposes a sandbox may state to be granted this dataset."""
    retention: Retention = Field(default_factory=lambda: Retention())
    """How long the data and its access records may be kept."""


class DatasetStatus(WireModel):
    """Observed state of a Dataset."""

    conditions: list[Condition] = Field(default_factory=list)
    """``Ready``."""
    observed_generation: int | None = None
    """Generation last reconciled."""
