"""The regsandbox API (group ``regsandbox.io``, version ``v1alpha1``) as pydantic models.

CRDs are generated from these models by :mod:`sandbox.api.crd`; never hand-edit them.
"""

from sandbox.api.conditions import find_condition, is_true, set_condition
from sandbox.api.dataset import (
    DataCategory,
    DatasetLocation,
    DatasetSpec,
    DatasetStatus,
    IctThirdParty,
    Identifiability,
    PersonalData,
    Retention,
)
from sandbox.api.meta import API_GROUP, API_VERSION, Condition, parse_duration
from sandbox.api.resources import RESOURCES, Resource, resource
from sandbox.api.sandbox import (
    DatasetRequest,
    EgressRule,
    Lifetime,
    PublicInterest,
    SandboxResources,
    SandboxSpec,
    SandboxStatus,
)
from sandbox.api.sandboxpolicy import Enforcement, SandboxPolicySpec, SandboxPolicyStatus
from sandbox.api.tenant import (
    Attestations,
    DataPermit,
    Member,
    Role,
    Sector,
    SpecialCategoryBasis,
    TenantQuota,
    TenantSpec,
    TenantStatus,
)
from sandbox.api.transfers import AttestedTransfer, Transfer, TransferMechanism

__all__ = [
    "API_GROUP",
    "API_VERSION",
    "RESOURCES",
    "Attestations",
    "AttestedTransfer",
    "Condition",
    "DataCategory",
    "DataPermit",
    "DatasetLocation",
    "DatasetRequest",
    "DatasetSpec",
    "DatasetStatus",
    "EgressRule",
    "Enforcement",
    "IctThirdParty",
    "Identifiability",
    "Lifetime",
    "Member",
    "PersonalData",
    "PublicInterest",
    "Resource",
    "Retention",
    "Role",
    "SandboxPolicySpec",
    "SandboxPolicyStatus",
    "SandboxResources",
    "SandboxSpec",
    "SandboxStatus",
    "Sector",
    "SpecialCategoryBasis",
    "TenantQuota",
    "TenantSpec",
    "TenantStatus",
    "Transfer",
    "TransferMechanism",
    "find_condition",
    "is_true",
    "parse_duration",
    "resource",
    "set_condition",
]
