"""The dataset gateway's identity and its least-privilege RBAC (a plan like the others).

The gateway may review tokens and read exactly the three kinds it decides with:
``create`` TokenReviews, ``get`` Namespaces, Sandboxes and Datasets. Not ``list``, not
``watch``, not Secrets, not Pods: a compromised gateway learns nothing it was not asked.
"""

from __future__ import annotations

from typing import Any

from sandbox.api.meta import API_GROUP

__all__ = ["GATEWAY_NAME", "RULES", "gateway_rbac"]

GATEWAY_NAME = "regsandbox-gateway"
"""Name of the ServiceAccount, ClusterRole and ClusterRoleBinding."""

RULES: tuple[dict[str, list[str]], ...] = (
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
    {"apiGroups": [API_GROUP], "resources": ["sandboxes", "datasets"], "verbs": ["get"]},
)
"""Everything the gateway may do against the API server."""


def _labels() -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "regsandbox",
        "app.kubernetes.io/component": "gateway",
        "app.kubernetes.io/managed-by": "regsandbox",
    }


def gateway_rbac(namespace: str, name: str = GATEWAY_NAME) -> list[dict[str, Any]]:
    """ServiceAccount ``namespace/name``, its ClusterRole and ClusterRoleBinding."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": namespace, "labels": _labels()},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": _labels()},
            "rules": [dict(rule) for rule in RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": _labels()},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        },
    ]
