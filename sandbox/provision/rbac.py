"""The ClusterRoles regsandbox ships, and the operator's own least-privilege RBAC.

Tenant members and sandbox workloads get their rights through RoleBindings (made by
the operator, per namespace) to the ClusterRoles below. The operator holds ``bind``
on exactly these ClusterRoles, so it can hand them out without holding the rights
itself. The chart's RBAC is generated from this module (``python -m
sandbox.provision.rbac``) and a test fails when the committed file is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from sandbox.api.meta import API_GROUP

__all__ = [
    "LEADER_ELECTION_LEASE",
    "LEADER_ELECTION_ROLE",
    "MEMBER_CLUSTER_ROLE",
    "OPERATOR_CLUSTER_ROLE",
    "OPERATOR_SERVICE_ACCOUNT",
    "PLATFORM_AUDITOR_CLUSTER_ROLE",
    "REVIEWER_CLUSTER_ROLE",
    "TENANT_AUDITOR_CLUSTER_ROLE",
    "WORKLOAD_CLUSTER_ROLE",
    "chart_rules",
    "cluster_roles",
    "leader_election_rules",
    "operator_rbac",
    "operator_rules",
    "render_rules",
]

MEMBER_CLUSTER_ROLE = "regsandbox-tenant-member"
"""Owners and members in the tenant's home namespace."""
REVIEWER_CLUSTER_ROLE = "regsandbox-tenant-reviewer"
"""Reviewers in the tenant's home namespace."""
TENANT_AUDITOR_CLUSTER_ROLE = "regsandbox-tenant-auditor"
"""Auditors in the tenant's home namespace: read that tenant's audit entries, nothing else."""
PLATFORM_AUDITOR_CLUSTER_ROLE = "regsandbox-platform-auditor"
"""The whole audit log; platform engineers bind it with a ClusterRoleBinding (the
operator never binds it)."""
WORKLOAD_CLUSTER_ROLE = "regsandbox-sandbox-workloads"
"""Owners and members in a sandbox namespace: run workloads, change nothing else."""
OPERATOR_CLUSTER_ROLE = "regsandbox-operator"
"""The operator's own rights."""
OPERATOR_SERVICE_ACCOUNT = "regsandbox-operator"
"""The operator's ServiceAccount, in the release namespace."""
LEADER_ELECTION_ROLE = "regsandbox-operator-leader-election"
"""The Role (in the release namespace) that lets operator replicas elect a leader."""
LEADER_ELECTION_LEASE = "regsandbox-operator"
"""The Lease the operator replicas elect their leader on."""

_READ = ["get", "list", "watch"]
_MANAGE = ["get", "list", "watch", "create", "update", "patch", "delete"]
_RUN = [*_MANAGE, "deletecollection"]
_LABELS = {"app.kubernetes.io/name": "regsandbox", "app.kubernetes.io/part-of": "regsandbox"}


def _rule(
    groups: list[str], resources: list[str], verbs: list[str], **extra: Any
) -> dict[str, Any]:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs, **extra}


def cluster_roles() -> list[dict[str, Any]]:
    """The ClusterRoles that RoleBindings made by the operator refer to, and the
    platform auditor's."""
    events = _rule(["", "events.k8s.io"], ["events"], _READ)
    member = [
        _rule([API_GROUP], ["sandboxes", "modelexports"], _MANAGE),
        _rule([API_GROUP], ["sandboxes/status", "modelexports/status", "exportreviews"], _READ),
        events,
    ]
    reviewer = [
        _rule([API_GROUP], ["exportreviews"], ["get", "list", "watch", "create"]),
        _rule(
            [API_GROUP],
            ["sandboxes", "sandboxes/status", "modelexports", "modelexports/status"],
            _READ,
        ),
        events,
    ]
    # The audit service asks a SubjectAccessReview on this resource, which no API serves
    # (sandbox.kube.audit_access): in tenant-<name> for that tenant's entries,
    # cluster-scoped for the whole log. RBAC grants a resource by name alone.
    auditor = [_rule([API_GROUP], ["auditentries"], ["get", "list"])]
    workloads = [
        _rule([""], ["pods", "services", "configmaps"], _RUN),
        _rule([""], ["pods/log", "pods/status"], _READ),
        _rule([""], ["pods/exec", "pods/attach"], ["create", "get"]),
        _rule(["apps"], ["deployments", "statefulsets", "replicasets"], _RUN),
        _rule(["batch"], ["jobs", "cronjobs"], _RUN),
        # Read-only: members see their limits but change neither isolation nor storage,
        # and Secrets (which may hold volume keys) are out of reach.
        _rule([""], ["persistentvolumeclaims", "resourcequotas", "limitranges", "events"], _READ),
        _rule(["networking.k8s.io"], ["networkpolicies"], _READ),
    ]
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": _LABELS},
            "rules": rules,
        }
        for name, rules in (
            (MEMBER_CLUSTER_ROLE, member),
            (REVIEWER_CLUSTER_ROLE, reviewer),
            (WORKLOAD_CLUSTER_ROLE, workloads),
            (TENANT_AUDITOR_CLUSTER_ROLE, auditor),
            (PLATFORM_AUDITOR_CLUSTER_ROLE, auditor),
        )
    ]


def operator_rules() -> list[dict[str, Any]]:
    """Exactly what the operator needs, cluster-wide."""
    ours = ["tenants", "sandboxes", "datasets", "sandboxpolicies", "modelexports", "exportreviews"]
    return [
        _rule([API_GROUP], ours, ["get", "list", "watch", "patch", "update"]),
        _rule([API_GROUP], [f"{r}/status" for r in ours], ["get", "patch", "update"]),
        _rule(["", "events.k8s.io"], ["events"], ["create", "patch"]),
        _rule([""], ["namespaces"], ["get", "list", "watch", "create", "patch", "delete"]),
        _rule(
            [""],
            [
                "serviceaccounts",
                "resourcequotas",
                "limitranges",
                "persistentvolumeclaims",
                "secrets",
                "configmaps",
            ],
            ["get", "list", "create", "patch", "delete"],
        ),
        # A quota it has just created gets its usage at once (sandbox.kube.quota's
        # seed_usage), guarded by the create's resourceVersion.
        _rule([""], ["resourcequotas/status"], ["update"]),
        # Watched for names and versions only (sandbox.kube.versions); never Secrets,
        # whose watch from an old revision would replay deleted wrapped keys.
        _rule(
            [""],
            ["serviceaccounts", "resourcequotas", "limitranges", "persistentvolumeclaims"],
            ["watch"],
        ),
        _rule(
            ["networking.k8s.io"],
            ["networkpolicies"],
            ["get", "list", "watch", "create", "patch", "delete"],
        ),
        _rule(
            ["rbac.authorization.k8s.io"],
            ["roles", "rolebindings"],
            ["get", "list", "watch", "create", "patch", "delete"],
        ),
        _rule(
            ["rbac.authorization.k8s.io"],
            ["clusterroles"],
            ["bind"],
            resourceNames=[
                MEMBER_CLUSTER_ROLE,
                REVIEWER_CLUSTER_ROLE,
                WORKLOAD_CLUSTER_ROLE,
                TENANT_AUDITOR_CLUSTER_ROLE,
            ],
        ),
        _rule(
            ["storage.k8s.io"],
            ["storageclasses"],
            ["get", "list", "watch", "create", "patch", "delete"],
        ),
        # kopf discovers and watches the regsandbox resources through their CRDs.
        _rule(["apiextensions.k8s.io"], ["customresourcedefinitions"], ["get", "list", "watch"]),
    ]


def leader_election_rules() -> list[dict[str, Any]]:
    """The election's rights, in the operator's namespace only: read and renew its one
    Lease by name; ``create`` cannot be limited by name (the name is not known to the
    authorizer before the object exists), so it is granted alone."""
    return [
        _rule(
            ["coordination.k8s.io"],
            ["leases"],
            ["get", "update"],
            resourceNames=[LEADER_ELECTION_LEASE],
        ),
        _rule(["coordination.k8s.io"], ["leases"], ["create"]),
    ]


def operator_rbac(namespace: str) -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole and ClusterRoleBinding of the operator in ``namespace``."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                "name": OPERATOR_SERVICE_ACCOUNT,
                "namespace": namespace,
                "labels": _LABELS,
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": OPERATOR_CLUSTER_ROLE, "labels": _LABELS},
            "rules": operator_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": OPERATOR_CLUSTER_ROLE, "labels": _LABELS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": OPERATOR_CLUSTER_ROLE,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": namespace}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": LEADER_ELECTION_ROLE, "namespace": namespace, "labels": _LABELS},
            "rules": leader_election_rules(),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": LEADER_ELECTION_ROLE, "namespace": namespace, "labels": _LABELS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": LEADER_ELECTION_ROLE,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": namespace}
            ],
        },
    ]


def chart_rules() -> dict[str, list[dict[str, Any]]]:
    """ClusterRole (and the election Role) name -> rules, as the chart ships them in
    ``files/rbac/``."""
    from sandbox.provision.gateway_rbac import GATEWAY_NAME, RULES

    rules = {role["metadata"]["name"]: role["rules"] for role in cluster_roles()}
    rules[OPERATOR_CLUSTER_ROLE] = operator_rules()
    rules[GATEWAY_NAME] = [dict(rule) for rule in RULES]
    rules[LEADER_ELECTION_ROLE] = leader_election_rules()
    return rules


def render_rules(rules: list[dict[str, Any]]) -> str:
    """One ``files/rbac/NAME.yaml`` file: a do-not-edit header and the rules list."""
    header = "# Generated by `python -m sandbox.provision.rbac` from sandbox/; do not edit.\n"
    return header + yaml.safe_dump(rules, sort_keys=False)


def main() -> None:
    """``python -m sandbox.provision.rbac [DIR]`` writes the chart's RBAC rule files."""
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "charts/regsandbox/files/rbac")
    target.mkdir(parents=True, exist_ok=True)
    for name, rules in chart_rules().items():
        path = target / f"{name}.yaml"
        path.write_text(render_rules(rules))
        print(path)


if __name__ == "__main__":
    main()
