"""What the operator applies for a Tenant: its home namespace and members' RBAC."""

from __future__ import annotations

from typing import Any

from sandbox.api.meta import API_GROUP
from sandbox.api.tenant import Member, Role, TenantSpec
from sandbox.provision.names import managed_labels, tenant_namespace

__all__ = ["MEMBER_ROLE", "REVIEWER_ROLE", "member_subjects", "tenant_objects"]

MEMBER_ROLE = "regsandbox-tenant-member"
"""Role in the home namespace for owners and members."""
REVIEWER_ROLE = "regsandbox-tenant-reviewer"
"""Role in the home namespace for reviewers."""

_READ = ["get", "list", "watch"]
_WRITE = ["get", "list", "watch", "create", "update", "patch", "delete"]


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


def _role(
    name: str, namespace: str, labels: dict[str, str], rules: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "rules": rules,
    }


def _binding(
    name: str, namespace: str, labels: dict[str, str], subjects: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": subjects,
    }


def tenant_objects(name: str, spec: TenantSpec) -> list[dict[str, Any]]:
    """Namespace, Roles and RoleBindings of a tenant's home, in apply order.

    Owners and members manage Sandboxes and ModelExports; reviewers manage
    ExportReviews and read the rest; nobody gets anything else in the namespace.
    """
    ns = tenant_namespace(name)
    labels = managed_labels(tenant=name, sector=spec.sector.value)
    member_rules = [
        {"apiGroups": [API_GROUP], "resources": ["sandboxes", "modelexports"], "verbs": _WRITE},
        {
            "apiGroups": [API_GROUP],
            "resources": ["sandboxes/status", "modelexports/status", "exportreviews"],
            "verbs": _READ,
        },
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": _READ},
    ]
    reviewer_rules = [
        {
            "apiGroups": [API_GROUP],
            "resources": ["exportreviews"],
            "verbs": ["get", "list", "watch", "create"],
        },
        {
            "apiGroups": [API_GROUP],
            "resources": ["sandboxes", "sandboxes/status", "modelexports", "modelexports/status"],
            "verbs": _READ,
        },
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": _READ},
    ]
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
        _role(MEMBER_ROLE, ns, labels, member_rules),
        _role(REVIEWER_ROLE, ns, labels, reviewer_rules),
    ]
    members = member_subjects(spec.members, {Role.owner, Role.member})
    reviewers = member_subjects(spec.members, {Role.reviewer})
    objects.append(_binding(MEMBER_ROLE, ns, labels, members))
    objects.append(_binding(REVIEWER_ROLE, ns, labels, reviewers))
    return objects
