"""What the operator applies for a Tenant: its home namespace and members' RBAC."""

from __future__ import annotations

from typing import Any

from sandbox.api.tenant import Member, Role, TenantSpec
from sandbox.provision.names import managed_labels, tenant_namespace
from sandbox.provision.rbac import (
    MEMBER_CLUSTER_ROLE,
    REVIEWER_CLUSTER_ROLE,
    TENANT_AUDITOR_CLUSTER_ROLE,
)

__all__ = [
    "AUDITOR_ROLE",
    "MAX_TENANT_NAME",
    "MEMBER_ROLE",
    "REVIEWER_ROLE",
    "member_subjects",
    "name_problem",
    "tenant_objects",
]

MEMBER_ROLE = MEMBER_CLUSTER_ROLE
"""ClusterRole bound in the home namespace for owners and members."""
REVIEWER_ROLE = REVIEWER_CLUSTER_ROLE
"""ClusterRole bound in the home namespace for reviewers."""
AUDITOR_ROLE = TENANT_AUDITOR_CLUSTER_ROLE
"""ClusterRole bound in the home namespace for auditors: the tenant's audit entries, read
through the audit service, which asks a SubjectAccessReview in this namespace."""


MAX_TENANT_NAME = 63 - len("tenant-")
"""Longest Tenant name whose home namespace is exactly ``tenant-<name>``."""


def name_problem(name: str) -> str | None:
    """Why a Tenant may not have ``name``, or None.

    A longer name's namespace would be shortened with a hash suffix (a namespace name
    has at most 63 characters), and that shortened name is one another Tenant could
    take outright: both Tenants' members and auditors would then be bound in one
    namespace, where the audit service asks about both tenants' entries.
    """
    if tenant_namespace(name) != f"tenant-{name}" or len(name) > MAX_TENANT_NAME:
        return (
            f"the name is {len(name)} characters; a Tenant's name has at most "
            f"{MAX_TENANT_NAME}, so that its home namespace is exactly tenant-<name>"
        )
    return None


def member_subjects(members: list[Member], roles: set[Role]) -> list[dict[str, str]]:
    """RBAC subjects for the members holding one of ``roles``, in a stable order."""
    seen: set[tuple[str, str]] = set()
    subjects = []
    for m in members:
        if m.role in roles and (m.kind, m.name) not in seen:
            seen.add((m.kind, m.name))
            subjects.append(
                {"kind": m.kind, "name": m.name, "apiGroup": "rbac.authorization.k8s.io"}
            )
    return sorted(subjects, key=lambda s: (s["kind"], s["name"]))


def _binding(
    name: str, namespace: str, labels: dict[str, str], subjects: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": subjects,
    }


def tenant_objects(name: str, spec: TenantSpec) -> list[dict[str, Any]]:
    """Namespace and RoleBindings (to the shipped ClusterRoles) of a tenant's home.

    Owners and members manage Sandboxes and ModelExports; reviewers manage
    ExportReviews and read the rest; auditors read the tenant's audit entries and
    nothing of the namespace's objects; nobody gets anything else in the namespace.
    Each binding exists with no subjects when no member holds its role, so removing
    the last such member empties it (the apply replaces the subject list).
    """
    ns = tenant_namespace(name)
    labels = managed_labels(tenant=name, sector=spec.sector.value)
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": ns,
                "labels": {
                    **labels,
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
        },
    ]
    members = member_subjects(spec.members, {Role.owner, Role.member})
    reviewers = member_subjects(spec.members, {Role.reviewer})
    auditors = member_subjects(spec.members, {Role.auditor})
    objects.append(_binding(MEMBER_ROLE, ns, labels, members))
    objects.append(_binding(REVIEWER_ROLE, ns, labels, reviewers))
    objects.append(_binding(AUDITOR_ROLE, ns, labels, auditors))
    return objects
