"""The chart's identities, asked of the real API server: each may do what it needs, no more.

The chart is rendered by the pinned helm and installed on a control plane of its own.
Then, for the gateway's and the audit service's ServiceAccounts:

- a SelfSubjectRulesReview *as* the ServiceAccount (impersonated) lists every rule it
  holds in a namespace; after the rules every authenticated user has, it must equal
  the list below exactly, in the release namespace, a sandbox namespace and
  kube-system;
- SubjectAccessReviews check the allowed verbs one by one and a table of verbs an
  attacker holding the identity would want (Secrets, pods/exec, tokens, CRDs, RBAC,
  impersonation, other namespaces...), each of which must be denied;
- a few real requests, impersonated, get the answer the reviews predict.

The operator, whose rules a test in ``test_chart.py`` shows are all needed, is checked
here for what it must never hold: a way to more power (bind or escalate other roles,
impersonate, mint tokens) or into workloads (pods, exec).

What each identity needs, from the code that uses it: the gateway reviews workload
tokens (TokenReview ``create``) and reads, with ``get`` only, the namespace of the
caller and the Sandbox and Dataset it decides on (``sandbox/gateway/auth.py``,
``authz.py``); the audit service talks to no API but one, updating its checkpoint
anchor, a ConfigMap named by ``resourceNames`` (``sandbox/kube/audit_anchor.py``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.toolchain import tool_path
from sandbox.testing import api_client

pytestmark = pytest.mark.integration

RELEASE = "rs"
NAMESPACE = "regsandbox-system"
SANDBOX_NS = "sbx-acme-study"
ANCHOR = f"{RELEASE}-audit-anchor"
NAMESPACES = (NAMESPACE, SANDBOX_NS, "tenant-acme", "kube-system", "default")

Rule = tuple[str, str, str, str]
"""(apiGroup, resource, verb, resourceName or "") — one permission."""

GATEWAY = f"system:serviceaccount:{NAMESPACE}:regsandbox-gateway"
AUDIT = f"system:serviceaccount:{NAMESPACE}:regsandbox-audit"

GATEWAY_NEEDS: frozenset[Rule] = frozenset(
    {
        ("authentication.k8s.io", "tokenreviews", "create", ""),
        ("", "namespaces", "get", ""),
        ("regsandbox.io", "sandboxes", "get", ""),
        ("regsandbox.io", "datasets", "get", ""),
    }
)
"""Everything the gateway may do, in every namespace (its role is cluster-wide)."""

AUDIT_NEEDS: frozenset[Rule] = frozenset(
    {("", "configmaps", "get", ANCHOR), ("", "configmaps", "update", ANCHOR)}
)
"""Everything the audit service may do in the release namespace only."""

AUDIT_EVERYWHERE: frozenset[Rule] = frozenset(
    {("authentication.k8s.io", "tokenreviews", "create", "")}
)
"""What the audit service may do cluster-wide: check a writer's own ServiceAccount token
(TokenReview; no shared writer secret). With kubernetesReaders off, nothing more."""

EVERYONE: frozenset[Rule] = frozenset(
    {
        ("authorization.k8s.io", "selfsubjectaccessreviews", "create", ""),
        ("authorization.k8s.io", "selfsubjectrulesreviews", "create", ""),
        ("authentication.k8s.io", "selfsubjectreviews", "create", ""),
    }
)
"""What Kubernetes gives every authenticated user (system:basic-user)."""

# (verb, group, resource, subresource, namespace, name): what an attacker would want.
ATTACKS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("get", "", "secrets", "", NAMESPACE, f"{RELEASE}-audit-tokens"),
    ("list", "", "secrets", "", NAMESPACE, ""),
    ("get", "", "secrets", "", SANDBOX_NS, "regsandbox-volume-key"),
    ("list", "", "secrets", "", "kube-system", ""),
    ("watch", "", "secrets", "", "", ""),
    ("create", "", "pods", "", SANDBOX_NS, ""),
    ("create", "", "pods", "exec", SANDBOX_NS, "train"),
    ("create", "", "pods", "attach", NAMESPACE, "rs-operator"),
    ("create", "", "pods", "portforward", NAMESPACE, "rs-audit-0"),
    ("list", "", "pods", "", "", ""),
    ("create", "", "serviceaccounts", "token", NAMESPACE, "regsandbox-operator"),
    ("create", "", "serviceaccounts", "token", SANDBOX_NS, "workload"),
    ("impersonate", "", "users", "", "", "admin"),
    ("impersonate", "", "serviceaccounts", "", NAMESPACE, "regsandbox-operator"),
    ("impersonate", "", "groups", "", "", "system:masters"),
    (
        "update",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        "",
        "sandboxes.regsandbox.io",
    ),
    (
        "delete",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        "",
        "sandboxes.regsandbox.io",
    ),
    ("update", "regsandbox.io", "sandboxes", "", "tenant-acme", "study"),
    ("patch", "regsandbox.io", "sandboxes", "status", "tenant-acme", "study"),
    ("delete", "regsandbox.io", "sandboxes", "", "tenant-acme", "study"),
    ("list", "regsandbox.io", "sandboxes", "", "", ""),
    ("watch", "regsandbox.io", "datasets", "", "", ""),
    ("create", "regsandbox.io", "modelexports", "", "tenant-acme", ""),
    ("update", "regsandbox.io", "exportreviews", "", "tenant-acme", "r1"),
    ("update", "regsandbox.io", "tenants", "", "", "acme"),
    ("list", "", "namespaces", "", "", ""),
    ("update", "", "namespaces", "", "", SANDBOX_NS),
    ("delete", "", "namespaces", "", "", SANDBOX_NS),
    ("delete", "networking.k8s.io", "networkpolicies", "", SANDBOX_NS, "default-deny"),
    ("update", "", "resourcequotas", "", SANDBOX_NS, "sandbox"),
    ("create", "rbac.authorization.k8s.io", "rolebindings", "", SANDBOX_NS, ""),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", "", "cluster-admin"),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", "regsandbox-gateway"),
    ("update", "rbac.authorization.k8s.io", "roles", "", NAMESPACE, "regsandbox-audit-anchor"),
    ("delete", "admissionregistration.k8s.io", "validatingadmissionpolicies", "", "", "x"),
    ("create", "certificates.k8s.io", "certificatesigningrequests", "", "", ""),
    ("create", "authorization.k8s.io", "subjectaccessreviews", "", "", ""),
    ("create", "", "configmaps", "", NAMESPACE, ""),
    ("get", "", "configmaps", "", NAMESPACE, "kube-root-ca.crt"),
    ("list", "", "configmaps", "", NAMESPACE, ""),
    ("watch", "", "configmaps", "", NAMESPACE, ""),
    ("delete", "", "configmaps", "", NAMESPACE, ANCHOR),
    ("patch", "", "configmaps", "", NAMESPACE, ANCHOR),
    ("get", "", "configmaps", "", SANDBOX_NS, ANCHOR),
    ("update", "", "configmaps", "", "kube-system", ANCHOR),
    ("create", "", "persistentvolumeclaims", "", NAMESPACE, ""),
    ("delete", "", "persistentvolumeclaims", "", NAMESPACE, f"log-{RELEASE}-audit-0"),
    ("update", "apps", "statefulsets", "", NAMESPACE, f"{RELEASE}-audit"),
    ("create", "", "events", "", NAMESPACE, ""),
    ("create", "coordination.k8s.io", "leases", "", NAMESPACE, ""),
)


OPERATOR = f"system:serviceaccount:{NAMESPACE}:regsandbox-operator"

# The operator legitimately manages namespaces, Secrets, quotas and RBAC of sandboxes;
# what it must never hold is a way to more power than that, or into running workloads.
OPERATOR_DENIED: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", "", "cluster-admin"),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", "", "admin"),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", "regsandbox-operator"),
    ("escalate", "rbac.authorization.k8s.io", "roles", "", SANDBOX_NS, "x"),
    ("update", "rbac.authorization.k8s.io", "clusterroles", "", "", "regsandbox-operator"),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", ""),
    ("impersonate", "", "users", "", "", "admin"),
    ("impersonate", "", "serviceaccounts", "", SANDBOX_NS, "workload"),
    ("impersonate", "", "groups", "", "", "system:masters"),
    ("create", "", "pods", "", SANDBOX_NS, ""),
    ("create", "", "pods", "exec", SANDBOX_NS, "train"),
    ("create", "", "serviceaccounts", "token", SANDBOX_NS, "workload"),
    ("create", "", "serviceaccounts", "token", NAMESPACE, "regsandbox-gateway"),
    (
        "update",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        "",
        "sandboxes.regsandbox.io",
    ),
    (
        "delete",
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "",
        "",
        "sandboxes.regsandbox.io",
    ),
    ("delete", "admissionregistration.k8s.io", "validatingadmissionpolicies", "", "", "x"),
    ("update", "admissionregistration.k8s.io", "validatingadmissionpolicybindings", "", "", "x"),
    ("create", "certificates.k8s.io", "certificatesigningrequests", "", "", ""),
    ("update", "", "nodes", "", "", "node-1"),
    ("update", "", "configmaps", "", NAMESPACE, ANCHOR),
    ("delete", "regsandbox.io", "tenants", "", "", "acme"),
    ("create", "regsandbox.io", "exportreviews", "", "tenant-acme", ""),
)


def _helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool_path("helm")), *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def installed(
    tmp_path_factory: pytest.TempPathFactory, repo_root: Path
) -> Iterator[client.ApiClient]:
    """The chart, installed by the pinned helm on a control plane of its own; admin client."""
    plane = ControlPlane(tmp_path_factory.mktemp("rbac-cp"))
    plane.up()
    try:
        done = _helm(
            "install",
            RELEASE,
            str(repo_root / "charts/regsandbox"),
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--kubeconfig",
            str(plane.admin_kubeconfig),
            "--wait=false",
        )
        assert done.returncode == 0, done.stderr
        admin = api_client(plane.admin_kubeconfig)
        core = client.CoreV1Api(admin)
        for ns in (SANDBOX_NS, "tenant-acme"):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        yield admin
    finally:
        plane.down()


def _as(admin: client.ApiClient, user: str) -> client.ApiClient:
    """A client that acts as ``user`` (the API server adds a ServiceAccount's groups)."""
    api = client.ApiClient(admin.configuration)
    api.set_default_header("Impersonate-User", user)
    return api


def _allowed(
    admin: client.ApiClient,
    user: str,
    verb: str,
    group: str,
    resource: str,
    subresource: str = "",
    namespace: str = "",
    name: str = "",
) -> bool:
    """The API server's answer to a SubjectAccessReview for the ServiceAccount ``user``."""
    sa_namespace = user.split(":")[2]
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{sa_namespace}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb,
                group=group,
                resource=resource,
                subresource=subresource or None,
                namespace=namespace or None,
                name=name or None,
            ),
        )
    )
    answer = client.AuthorizationV1Api(admin).create_subject_access_review(review)
    return bool(answer.status.allowed)


def _rules(admin: client.ApiClient, user: str, namespace: str) -> frozenset[Rule]:
    """Every permission ``user`` holds in ``namespace``, as its own rules review lists them."""
    review = client.V1SelfSubjectRulesReview(
        spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace)
    )
    status = (
        client.AuthorizationV1Api(_as(admin, user)).create_self_subject_rules_review(review).status
    )
    assert not status.incomplete, status.evaluation_error
    held: set[Rule] = set()
    for rule in status.resource_rules:
        for group in rule.api_groups or [""]:
            for resource in rule.resources or []:
                for verb in rule.verbs:
                    for name in rule.resource_names or [""]:
                        held.add((group, resource, verb, name))
    return frozenset(held)


@pytest.mark.parametrize(
    ("user", "needs", "where", "everywhere"),
    [
        (GATEWAY, GATEWAY_NEEDS, set(NAMESPACES), frozenset()),
        (AUDIT, AUDIT_NEEDS, {NAMESPACE}, AUDIT_EVERYWHERE),
    ],
    ids=["gateway", "audit"],
)
def test_each_identity_holds_exactly_what_it_needs(
    installed: client.ApiClient,
    user: str,
    needs: frozenset[Rule],
    where: set[str],
    everywhere: frozenset[Rule],
) -> None:
    for namespace in NAMESPACES:
        expected = (needs if namespace in where else frozenset()) | everywhere
        held = _rules(installed, user, namespace) - EVERYONE
        assert held == expected, f"{user} in {namespace}: {sorted(held ^ expected)}"
    # Each needed permission, asked one by one (the rules review is advisory).
    for group, resource, verb, name in sorted(needs | everywhere):
        namespace = "" if resource in ("tokenreviews", "namespaces") else NAMESPACE
        assert _allowed(installed, user, verb, group, resource, "", namespace, name), (
            verb,
            resource,
            name,
        )


@pytest.mark.parametrize("user", [GATEWAY, AUDIT], ids=["gateway", "audit"])
@pytest.mark.parametrize("attack", ATTACKS, ids=["-".join(p for p in a if p)[:60] for a in ATTACKS])
def test_what_an_attacker_holding_the_identity_wants_is_denied(
    installed: client.ApiClient, user: str, attack: tuple[str, str, str, str, str, str]
) -> None:
    verb, group, resource, subresource, namespace, name = attack
    assert not _allowed(installed, user, verb, group, resource, subresource, namespace, name)


def test_the_gateway_cannot_do_what_its_audit_neighbour_can_and_the_reverse(
    installed: client.ApiClient,
) -> None:
    assert not _allowed(installed, GATEWAY, "update", "", "configmaps", "", NAMESPACE, ANCHOR)
    assert not _allowed(installed, GATEWAY, "get", "", "configmaps", "", NAMESPACE, ANCHOR)
    # The audit service checks writers' tokens, but asks nothing about what anyone may do
    # unless Kubernetes readers are enabled.
    assert not _allowed(installed, AUDIT, "create", "authorization.k8s.io", "subjectaccessreviews")
    assert not _allowed(installed, AUDIT, "get", "regsandbox.io", "sandboxes", "", SANDBOX_NS)
    assert not _allowed(installed, AUDIT, "get", "", "namespaces", "", "", NAMESPACE)


def _status(call: Any) -> int:
    try:
        call()
    except ApiException as exc:
        return int(exc.status)
    return 200


def test_impersonated_requests_get_the_answers_the_reviews_give(
    installed: client.ApiClient,
) -> None:
    gateway = _as(installed, GATEWAY)
    review = client.V1TokenReview(spec=client.V1TokenReviewSpec(token="not-a-token"))
    answer = client.AuthenticationV1Api(gateway).create_token_review(review)
    assert answer.status.authenticated is not True
    core = client.CoreV1Api(gateway)
    assert _status(lambda: core.read_namespace(SANDBOX_NS)) == 200
    custom = client.CustomObjectsApi(gateway)
    absent = _status(
        lambda: custom.get_namespaced_custom_object(
            "regsandbox.io", "v1alpha1", "tenant-acme", "sandboxes", "study"
        )
    )
    assert absent == 404  # allowed to look, and there is none
    assert _status(lambda: core.list_namespace()) == 403
    assert _status(lambda: core.list_namespaced_secret(NAMESPACE)) == 403
    assert _status(lambda: core.read_namespaced_config_map(ANCHOR, NAMESPACE)) == 403

    audit = client.CoreV1Api(_as(installed, AUDIT))
    anchor = audit.read_namespaced_config_map(ANCHOR, NAMESPACE)
    anchor.data = {"checkpoint": "written by the test"}
    audit.replace_namespaced_config_map(ANCHOR, NAMESPACE, anchor)
    assert _status(lambda: audit.read_namespaced_config_map("kube-root-ca.crt", NAMESPACE)) == 403
    assert _status(lambda: audit.list_namespaced_config_map(NAMESPACE)) == 403
    assert _status(lambda: audit.delete_namespaced_config_map(ANCHOR, NAMESPACE)) == 403
    assert _status(lambda: audit.list_namespaced_secret(NAMESPACE)) == 403
    assert _status(lambda: audit.read_namespace(NAMESPACE)) == 403


def _bindings(repo_root: Path, *assignments: str) -> dict[str, set[str]]:
    """ServiceAccount name → the roles (kind/name) the rendered chart binds it to."""
    args = [arg for assignment in assignments for arg in ("--set", assignment)]
    rendered = _helm("template", RELEASE, str(repo_root / "charts/regsandbox"), *args)
    assert rendered.returncode == 0, rendered.stderr
    bound: dict[str, set[str]] = {}
    for doc in yaml.safe_load_all(rendered.stdout):
        if doc and doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            role = f"{doc['roleRef']['kind']}/{doc['roleRef']['name']}"
            for subject in doc.get("subjects") or []:
                if subject["kind"] == "ServiceAccount":
                    bound.setdefault(subject["name"], set()).add(role)
    return bound


def test_the_chart_binds_each_identity_to_its_own_role_only(repo_root: Path) -> None:
    assert _bindings(repo_root) == {
        "regsandbox-operator": {
            "ClusterRole/regsandbox-operator",
            "Role/regsandbox-operator-leader-election",
        },
        "regsandbox-gateway": {"ClusterRole/regsandbox-gateway"},
        "regsandbox-audit": {
            "Role/regsandbox-audit-anchor",
            "ClusterRole/regsandbox-audit-reviews",
        },
    }
    # Without the anchor the audit service only checks writers' tokens.
    assert _bindings(repo_root, "audit.anchor.enabled=false")["regsandbox-audit"] == {
        "ClusterRole/regsandbox-audit-reviews"
    }


@pytest.mark.parametrize(
    "attack", OPERATOR_DENIED, ids=["-".join(p for p in a if p)[:60] for a in OPERATOR_DENIED]
)
def test_the_operator_holds_no_way_to_more_power(
    installed: client.ApiClient, attack: tuple[str, str, str, str, str, str]
) -> None:
    verb, group, resource, subresource, namespace, name = attack
    assert not _allowed(installed, OPERATOR, verb, group, resource, subresource, namespace, name)
    # It does hold the bind it needs, on its own roles only.
    assert _allowed(
        installed,
        OPERATOR,
        "bind",
        "rbac.authorization.k8s.io",
        "clusterroles",
        "",
        "",
        "regsandbox-tenant-member",
    )
