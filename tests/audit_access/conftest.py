"""A real control plane, the chart's audit RBAC, auditors, and an audit service reading as them.

The ClusterRoles are rendered from the chart by the pinned helm and applied with a
unique suffix (the session control plane is shared, and a later ``helm install`` there
must not find objects it does not own). The audit service's own client uses a real
ServiceAccount token bound only to the chart's review role, so the service works with
the least privilege the chart gives it. Auditors are ServiceAccounts with TokenRequest
tokens for the audit audience:

- ``tenant_a``: RoleBinding to the tenant auditor role in ``tenant-<a>``;
- ``platform``: ClusterRoleBinding to the platform auditor role;
- ``nobody``: no binding at all.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from audit.access import CachedAuthority
from audit.entry import Actor, Event, Resource
from audit.log import AuditLog
from audit.note import Signer
from audit.service import AccessPolicy, token_digest
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.toolchain import tool_path
from sandbox.kube.audit_access import AUDIENCE, KubernetesReaders
from sandbox.kube.clients import kube_client
from sandbox.provision.names import tenant_namespace
from tests.audit_service.conftest import serving_reads

ORIGIN = "audit.regsandbox.test/access"
ROLES = ("regsandbox-platform-auditor", "regsandbox-tenant-auditor", "regsandbox-audit-reviews")
STATIC_READER = "static-reader-token-for-the-fallback"


def render_chart(repo: Path, *assignments: str, set_flag: str = "--set") -> list[dict[str, Any]]:
    """The chart's documents, rendered by the pinned helm (``set_flag`` per assignment)."""
    sets = [arg for assignment in assignments for arg in (set_flag, assignment)]
    rendered = subprocess.run(
        [str(tool_path("helm")), "template", "rs", str(repo / "charts/regsandbox"), *sets],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def sa_token(api: client.ApiClient, namespace: str, name: str, audience: str | None) -> str:
    """A TokenRequest token of ServiceAccount ``namespace/name`` for ``audience``."""
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if audience is not None:
        spec["audiences"] = [audience]
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        name, namespace, {"spec": spec}
    )
    return str(token.status.token)


def token_kubeconfig(plane: ControlPlane, token: str, path: Path) -> Path:
    """A kubeconfig at ``path`` that authenticates with ``token`` only (no certificate)."""
    admin = yaml.safe_load(plane.admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "reader", "user": {"token": token}}],
        "contexts": [{"name": "reader", "context": {"cluster": cluster["name"], "user": "reader"}}],
        "current-context": "reader",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Setup:
    """The objects a test reads with: tenants, auditors' tokens, the log, the service."""

    tenant_a: str
    tenant_b: str
    tokens: dict[str, str]
    """``tenant_a``, ``platform``, ``nobody``, ``wrong_audience``: bearer tokens."""
    url: str
    """Base URL of the audit service."""
    log: AuditLog
    """The log it serves."""
    signer: Signer
    """The log's key."""
    indices: dict[str | None, list[int]]
    """Tenant (None: platform events) → indices of its entries."""
    admin: client.ApiClient
    """Cluster admin."""
    suffix: str
    """Suffix of every cluster-scoped object made here."""
    auditors_ns: str
    """Namespace of the auditor ServiceAccounts."""
    service_kubeconfig: Path
    """Kubeconfig of the audit service's own identity (bound to the review role only)."""


def event(tenant: str | None, n: int) -> Event:
    """An entry for ``tenant`` (None: a platform event naming no tenant)."""
    return Event(
        actor=Actor(user=f"user-{n}"),
        action="dataset.read" if tenant else "policy.changed",
        resource=Resource(kind="Dataset", name=f"d{n}", tenant=tenant),
        outcome="success",
    )


def _apply_roles(admin: client.ApiClient, repo: Path, suffix: str) -> None:
    rbac = client.RbacAuthorizationV1Api(admin)
    docs = render_chart(repo, "audit.kubernetesReaders.enabled=true")
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    for name in ROLES:
        body = roles[name]
        body["metadata"] = {"name": f"{name}-{suffix}"}
        rbac.create_cluster_role(body)


def _bind(admin: client.ApiClient, role: str, sa_ns: str, sa: str, namespace: str | None) -> None:
    rbac = client.RbacAuthorizationV1Api(admin)
    body = {
        "metadata": {"name": f"{sa}-{role}"[:63]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}],
    }
    if namespace is None:
        rbac.create_cluster_role_binding(body)
    else:
        rbac.create_namespaced_role_binding(namespace, body)


@dataclass(frozen=True)
class Auditors:
    """Tenants a and b, and ServiceAccounts bound as their auditors and as the service."""

    suffix: str
    tenant_a: str
    tenant_b: str
    namespace: str
    """Where the ServiceAccounts live."""
    tokens: dict[str, str]
    """Tokens for the audience: ``tenant-a``, ``platform``, ``nobody``, ``wrong-audience``."""
    kubeconfig: Path
    """The audit service's own kubeconfig (it may create SubjectAccessReviews)."""
    service_api: client.ApiClient


@contextlib.contextmanager
def auditor_identities(
    plane: ControlPlane, admin: client.ApiClient, repo: Path, workdir: Path, prefix: str
) -> Iterator[Auditors]:
    """Make the tenants' namespaces, the auditors and their bindings; remove them after."""
    suffix = secrets.token_hex(3)
    tenant_a, tenant_b = f"bank-{suffix}", f"clinic-{suffix}"
    auditors = f"{prefix}-{suffix}"
    core = client.CoreV1Api(admin)
    namespaces = [tenant_namespace(tenant_a), tenant_namespace(tenant_b), auditors]
    for ns in namespaces:
        core.create_namespace({"metadata": {"name": ns}})
    try:
        for sa in ("tenant-a", "platform", "nobody", "audit-service"):
            core.create_namespaced_service_account(auditors, {"metadata": {"name": sa}})
        _apply_roles(admin, repo, suffix)
        _bind(admin, f"regsandbox-tenant-auditor-{suffix}", auditors, "tenant-a", namespaces[0])
        _bind(admin, f"regsandbox-platform-auditor-{suffix}", auditors, "platform", None)
        _bind(admin, f"regsandbox-audit-reviews-{suffix}", auditors, "audit-service", None)
        tokens = {
            name: sa_token(admin, auditors, name, AUDIENCE)
            for name in ("tenant-a", "platform", "nobody")
        }
        tokens["wrong-audience"] = sa_token(admin, auditors, "tenant-a", "regsandbox-gateway")
        service_token = sa_token(admin, auditors, "audit-service", None)
        kubeconfig = workdir / "service.kubeconfig"
        service_api = kube_client(token_kubeconfig(plane, service_token, kubeconfig))
        yield Auditors(suffix, tenant_a, tenant_b, auditors, tokens, kubeconfig, service_api)
    finally:
        rbac = client.RbacAuthorizationV1Api(admin)
        for name in ROLES:
            with contextlib.suppress(ApiException):
                rbac.delete_cluster_role(f"{name}-{suffix}")
        for sa, role in (("platform", "platform-auditor"), ("audit-service", "audit-reviews")):
            with contextlib.suppress(ApiException):
                rbac.delete_cluster_role_binding(f"{sa}-regsandbox-{role}-{suffix}"[:63])
        for ns in namespaces:
            with contextlib.suppress(ApiException):
                core.delete_namespace(ns)


@pytest.fixture(scope="module")
def setup(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    """Tenants a and b, auditors, a log with entries of both, the service on a free port.

    Parametrise it indirectly with a layout of :data:`tests.audit_service.conftest.LAYOUTS`
    to read through the read server instead of the writer's listener.
    """
    layout = getattr(request, "param", "writer")
    workdir = tmp_path_factory.mktemp("access-kube")
    with auditor_identities(control_plane, admin_api, repo_root, workdir, "auditors") as who:
        signer = Signer.generate(ORIGIN)
        log = AuditLog.create(tmp_path_factory.mktemp("access-log"), ORIGIN, signer)
        plan = [who.tenant_a, who.tenant_b, None, who.tenant_a, who.tenant_b, who.tenant_b]
        plan = [*plan, who.tenant_a] * 3
        indices: dict[str | None, list[int]] = {}
        for n, tenant in enumerate(plan):
            indices.setdefault(tenant, []).append(log.append(event(tenant, n)))
        log.publish_checkpoint()
        authority = CachedAuthority(KubernetesReaders(who.service_api, tenant_namespace), ttl=0)
        policy = AccessPolicy(
            writers={}, readers={token_digest(STATIC_READER): "siem-export"}, authority=authority
        )
        try:
            with serving_reads(layout, log, policy) as url:
                yield Setup(
                    who.tenant_a,
                    who.tenant_b,
                    who.tokens,
                    url,
                    log,
                    signer,
                    indices,
                    admin_api,
                    who.suffix,
                    who.namespace,
                    who.kubeconfig,
                )
        finally:
            log.close()
