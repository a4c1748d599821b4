"""Dataset: regulated data registered by the platform (cluster-scoped, data stewards).

What the data is, in GDPR terms, is two fields: ``identifiability`` (anonymous,
pseudonymised, identified) and ``category`` (ordinary, special-category,
criminal-offence), so that "pseudonymised special-category" can be said. The single
``personalData`` class of earlier versions is still accepted and mapped
(:data:`LEGACY_PERSONAL_DATA`); a Dataset that gives both must give consistent values.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict, Field, model_validator

from sandbox.api.meta import Condition, WireModel
from sandbox.api.tenant import Sector
from sandbox.api.transfers import Transfer

__all__ = [
    "LEGACY_PERSONAL_DATA",
    "DataCategory",
    "DatasetLocation",
    "DatasetSpec",
    "DatasetStatus",
    "IctThirdParty",
    "Identifiability",
    "PersonalData",
    "Retention",
]


class PersonalData(StrEnum):
    """Deprecated single personal-data class; use ``identifiability`` and ``category``."""

    none = "none"
    anonymised = "anonymised"
    pseudonymised = "pseudonymised"
    personal = "personal"
    special_category = "special-category"


class Identifiability(StrEnum):
    """Whether the people in the data can be identified (GDPR Art. 4(1), (5); Recital 26)."""

    anonymous = "anonymous"
    """No one can be identified by any means reasonably likely to be used: outside the GDPR."""
    pseudonymised = "pseudonymised"
    """Identifiable only with additional information kept separately: still personal data."""
    identified = "identified"
    """Directly identifying."""


class DataCategory(StrEnum):
    """What kind of personal data it is."""

    ordinary = "ordinary"
    special_category = "special-category"
    """GDPR Art. 9(1): health, genetic, biometric, ethnic origin, beliefs, sex life, ..."""
    criminal_offence = "criminal-offence"
    """GDPR Art. 10: criminal convictions and offences."""


LEGACY_PERSONAL_DATA: dict[PersonalData, tuple[Identifiability, DataCategory]] = {
    PersonalData.none: (Identifiability.anonymous, DataCategory.ordinary),
    PersonalData.anonymised: (Identifiability.anonymous, DataCategory.ordinary),
    PersonalData.pseudonymised: (Identifiability.pseudonymised, DataCategory.ordinary),
    PersonalData.personal: (Identifiability.identified, DataCategory.ordinary),
    PersonalData.special_category: (Identifiability.identified, DataCategory.special_category),
}
"""How a ``personalData`` class reads as identifiability and category. The old class
could not say how identifiable special-category data is, so it reads as identified, the
stricter case. Policy treats personal data of a health dataset as special-category
whatever the category says (data concerning health, Art. 9(1))."""


class IctThirdParty(WireModel):
    """The ICT third-party arrangement under which a financial entity's data is processed
    here (DORA Art. 28): the entry in its register of information and the contractual
    data locations (Art. 30(2)(b))."""

    register_reference: str = Field(min_length=1, max_length=1024)
    """Reference of the contractual arrangement in the register of information (Art. 28(3))."""
    data_locations: list[str] = Field(min_length=1, max_length=64)
    """Where the contract allows the data to be processed and stored: region-catalogue ids
    or ISO 3166-1 alpha-2 countries. The sandbox's region must be one of them."""


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
    identifiability: Identifiability | None = None
    """``anonymous``, ``pseudonymised`` or ``identified`` (required unless ``personalData``)."""
    category: DataCategory | None = None
    """``ordinary``, ``special-category`` or ``criminal-offence`` (required unless
    ``personalData``)."""
    personal_data: PersonalData | None = None
    """Deprecated: the single class of earlier versions, mapped to identifiability and
    category (``none``/``anonymised`` anonymous ordinary, ``pseudonymised`` pseudonymised
    ordinary, ``personal`` identified ordinary, ``special-category`` identified
    special-category)."""
    allowed_purposes: list[str] = Field(default_factory=list)
    """Purposes a sandbox may state to be granted this dataset."""
    retention: Retention = Field(default_factory=lambda: Retention())
    """How long the data and its access records may be kept."""
    transfer: Transfer | None = None
    """How personal data stored outside the EEA and adequacy countries is lawfully
    transferred there (SCCs, BCRs, or the EU-US Data Privacy Framework)."""
    ict_third_party: IctThirdParty | None = None
    """Finance (DORA): the register entry and contractual data locations; required for
    personal data read by a finance tenant."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "has(self.personalData) || (has(self.identifiability) "
                    "&& has(self.category))",
                    "message": "set identifiability and category (or the deprecated personalData)",
                }
            ]
        }
    )

    @model_validator(mode="after")
    def _classified(self) -> DatasetSpec:
        given = (self.identifiability, self.category)
        if self.personal_data is None:
            if None in given:
                raise ValueError(
                    "set identifiability and category (or the deprecated personalData)"
                )
            return self
        legacy = LEGACY_PERSONAL_DATA[self.personal_data]
        for field, value, mapped in zip(
            ("identifiability", "category"), given, legacy, strict=True
        ):
            if value is not None and value != mapped:
                raise ValueError(
                    f"personalData {self.personal_data.value!r} means {field} {mapped.value!r}, "
                    f"not {value.value!r}: drop personalData"
                )
        return self


class DatasetStatus(WireModel):
    """Observed state of a Dataset."""

    conditions: list[Condition] = Field(default_factory=list)
    """``Ready``."""
    observed_generation: int | None = None
    """Generation last reconciled."""
