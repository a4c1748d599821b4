"""What the operator applies for an allowed Sandbox: an isolated namespace.

Pure functions from the Sandbox spec, the Tenant and a few platform settings to the
manifests, in apply order. Storage (StorageClass, PVC) and keys come from
:mod:`sandbox.storage` and :mod:`sandbox.keys`; this module does the isolation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from sandbox.api.accelerators import DEFAULT_ACCELERATORS
from sandbox.api.sandbox import EgressRule, SandboxSpec
from sandbox.api.tenant import Role, TenantQuota, TenantSpec
from sandbox.provision.names import managed_labels, sandbox_namespace
from sandbox.provision.rbac import WORKLOAD_CLUSTER_ROLE
from sandbox.provision.tenant_plan import member_subjects

__all__ = [
    "WORKLOAD_ROLE",
    "WORKLOAD_SERVICE_ACCOUNT",
    "EffectiveQuota",
    "IsolationSettings",
    "effective_quota",
    "isolation_objects",
    "namespace_object",
    "quarantine_policy",
    "quota_hard",
    "unoffered_accelerators",
]

WORKLOAD_ROLE = "regsandbox-workloads"
"""RoleBinding that lets tenant members run workloads in the sandbox namespace."""
WORKLOAD_SERVICE_ACCOUNT = "workload"
"""ServiceAccount for sandbox pods; its projected token authenticates to the gateway."""


@dataclass(frozen=True)
class IsolationSettings:
    """Platform facts the isolation depends on."""

    gateway_namespace: str = "regsandbox-system"
    """Namespace of the dataset gateway."""
    gateway_pod_labels: tuple[tuple[str, str], ...] = (
        ("app.kubernetes.io/name", "regsandbox"),
        ("app.kubernetes.io/component", "gateway"),
    )
    """Labels selecting the gateway pods."""
    gateway_port: int = 8443
    """Port the gateway listens on."""
    gateway_url: str | None = None
    """The gateway's in-cluster URL for S3 clients; when set, every sandbox namespace gets
    the ``regsandbox-s3`` ConfigMap (:mod:`sandbox.provision.s3_client_env`)."""
    gateway_s3_region: str = "us-east-1"
    """Region S3 clients in sandboxes sign for (any region is accepted)."""
    dns_namespace: str = "kube-system"
    """Namespace of the cluster DNS."""
    dns_pod_labels: tuple[tuple[str, str], ...] = (("k8s-app", "kube-dns"),)
    """Labels selecting the DNS pods."""
    accelerators: tuple[str, ...] = DEFAULT_ACCELERATORS
    """Extended resources the platform offers; each sandbox's quota caps every one."""


@dataclass(frozen=True)
class EffectiveQuota:
    """The sandbox's quota after capping by the tenant's ceilings."""

    cpu: str
    memory: str
    storage: str
    capped: tuple[str, ...]
    """Resources whose request exceeded the tenant's ceiling and were lowered."""
    accelerators: Mapping[str, int] = field(default_factory=dict)
    """Accelerators granted, by resource name (``gpu`` as ``nvidia.com/gpu``)."""


def _amount(quantity: str) -> Decimal:
    value: Decimal = parse_quantity(quantity)
    return value


def _cap(requested: str, ceiling: str | None) -> tuple[str, bool]:
    if ceiling is None:
        return requested, False
    if _amount(requested) > _amount(ceiling):
        return ceiling, True
    return requested, False


def effective_quota(spec: SandboxSpec, ceilings: TenantQuota) -> EffectiveQuota:
    """The sandbox's requested resources, each capped by the tenant's ceiling.

    Accelerators are capped type by type: a tenant's ceiling of two
    ``nvidia.com/gpu`` says nothing about ``nvidia.com/mig-3g.40gb``.
    """
    res = spec.resources
    values: dict[str, str] = {}
    capped: list[str] = []
    for name in ("cpu", "memory", "storage"):
        value, was_capped = _cap(getattr(res, name), getattr(ceilings, name))
        values[name] = value
        if was_capped:
            capped.append(name)
    limits = ceilings.accelerator_ceilings()
    granted: dict[str, int] = {}
    for resource, count in sorted(res.accelerator_counts().items()):
        ceiling = limits.get(resource)
        granted[resource] = count if ceiling is None else min(count, ceiling)
        if granted[resource] < count:
            capped.append(resource)
    return EffectiveQuota(capped=tuple(capped), accelerators=granted, **values)


def unoffered_accelerators(spec: SandboxSpec, offered: Collection[str]) -> list[str]:
    """The accelerators ``spec`` asks for (a non-zero count) that the platform does not offer."""
    return sorted(
        r for r, n in spec.resources.accelerator_counts().items() if n and r not in offered
    )


def quota_hard(quota: EffectiveQuota, offered: Iterable[str]) -> dict[str, str]:
    """The sandbox ResourceQuota's ``spec.hard``.

    Every offered accelerator is limited, to ``0`` unless granted: a quota limits only
    the resources it names, so one left out would be unlimited. A quota takes extended
    resources only in the ``requests.`` form (they are never overcommitted: a pod's
    request of one always equals its limit).
    """
    accelerators = {f"requests.{r}": "0" for r in offered}
    accelerators.update({f"requests.{r}": str(n) for r, n in quota.accelerators.items()})
    return {
        "requests.cpu": quota.cpu,
        "limits.cpu": quota.cpu,
        "requests.memory": quota.memory,
        "limits.memory": quota.memory,
        "requests.storage": quota.storage,
        "persistentvolumeclaims": "1",
        "services.loadbalancers": "0",
        "services.nodeports": "0",
        **dict(sorted(accelerators.items())),
    }


def _netpol(name: str, ns: str, labels: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
    }


def _egress_to_pods(
    namespace: str, pod_labels: Iterable[tuple[str, str]], ports: list[dict[str, Any]]
) -> dict[str, Any]:
    """A NetworkPolicy spec letting every pod reach ``ports`` of some pods of ``namespace``."""
    return {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {"kubernetes.io/metadata.name": namespace}
                        },
                        "podSelector": {"matchLabels": dict(pod_labels)},
                    }
                ],
                "ports": ports,
            }
        ],
    }


def _egress_rule(rule: EgressRule) -> dict[str, Any]:
    out: dict[str, Any] = {"to": [{"ipBlock": {"cidr": rule.cidr}}]}
    if rule.ports:
        out["ports"] = [{"protocol": "TCP", "port": p} for p in rule.ports]
    return out


def network_policies(
    ns: str, labels: dict[str, str], egress: list[EgressRule], settings: IsolationSettings
) -> list[dict[str, Any]]:
    """Default deny, DNS, the dataset gateway, and the accepted egress entries."""
    policies = [
        _netpol(
            "default-deny", ns, labels, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        ),
        _netpol(
            "allow-dns",
            ns,
            labels,
            _egress_to_pods(
                settings.dns_namespace,
                settings.dns_pod_labels,
                [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
            ),
        ),
        _netpol(
            "allow-dataset-gateway",
            ns,
            labels,
            _egress_to_pods(
                settings.gateway_namespace,
                settings.gateway_pod_labels,
                [{"protocol": "TCP", "port": settings.gateway_port}],
            ),
        ),
    ]
    if egress:
        policies.append(
            _netpol(
                "allow-egress-allowlist",
                ns,
                labels,
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [_egress_rule(r) for r in egress],
                },
            )
        )
    return policies


def quarantine_policy(ns: str, labels: dict[str, str]) -> dict[str, Any]:
    """A deny-all policy; the allow policies must be removed beside it to cut traffic."""
    return _netpol(
        "quarantine", ns, labels, {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    )


def namespace_object(name: str, tenant: str, tenant_spec: TenantSpec) -> dict[str, Any]:
    """The sandbox's namespace: labelled with its tenant and sandbox (the labels say whose
    it is), Pod Security ``restricted`` enforced."""
    labels = managed_labels(tenant=tenant, sandbox=name, sector=tenant_spec.sector.value)
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": sandbox_namespace(tenant, name),
            "labels": {
                **labels,
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "pod-security.kubernetes.io/audit": "restricted",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        },
    }


def isolation_objects(
    name: str,
    tenant: str,
    tenant_spec: TenantSpec,
    spec: SandboxSpec,
    quota: EffectiveQuota,
    egress: list[EgressRule],
    settings: IsolationSettings | None = None,
) -> list[dict[str, Any]]:
    """Namespace, NetworkPolicies, quota, LimitRange, ServiceAccount and RBAC, in apply order.

    ``egress`` is the allow-list that policy accepted (a subset of ``spec.egress``).
    Members' rights come from the shipped ClusterRole, which leaves out Secrets: the
    namespace may hold volume-encryption material.
    """
    settings = settings or IsolationSettings()
    ns = sandbox_namespace(tenant, name)
    labels = managed_labels(tenant=tenant, sandbox=name, sector=tenant_spec.sector.value)
    objects: list[dict[str, Any]] = [
        namespace_object(name, tenant, tenant_spec),
        *network_policies(ns, labels, egress, settings),
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "sandbox", "namespace": ns, "labels": labels},
            "spec": {"hard": quota_hard(quota, settings.accelerators)},
        },
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": {"name": "defaults", "namespace": ns, "labels": labels},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": {"cpu": "1", "memory": "1Gi"},
                        "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
                        "max": {"cpu": quota.cpu, "memory": quota.memory},
                    }
                ]
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": WORKLOAD_SERVICE_ACCOUNT, "namespace": ns, "labels": labels},
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": WORKLOAD_ROLE, "namespace": ns, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": WORKLOAD_CLUSTER_ROLE,
            },
            "subjects": member_subjects(tenant_spec.members, {Role.owner, Role.member}),
        },
    ]
    return objects
