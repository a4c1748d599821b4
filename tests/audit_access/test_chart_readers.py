"""The chart's reader roles and the audit service's own review rights, rendered and asked.

Rendered by the pinned helm: the auditor ClusterRoles grant ``get``/``list`` on
``auditentries.regsandbox.io`` and nothing else; with ``audit.kubernetesReaders`` on,
the service may create TokenReviews and SubjectAccessReviews and nothing more, runs with
``--kube-readers`` and never with ``--open-reads``. On the real control plane the
service's identity, bound to that role only, holds exactly those rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from tests.audit_access.conftest import Setup, render_chart

AUDITENTRIES = [
    {"apiGroups": ["regsandbox.io"], "resources": ["auditentries"], "verbs": ["get", "list"]}
]
REVIEWS = [
    {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
    {
        "apiGroups": ["authorization.k8s.io"],
        "resources": ["subjectaccessreviews"],
        "verbs": ["create"],
    },
]


def _find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any] | None:
    return next((d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name), None)


def _audit_args(docs: list[dict[str, Any]]) -> list[str]:
    sts = _find(docs, "StatefulSet", "rs-audit")
    assert sts is not None
    return list(sts["spec"]["template"]["spec"]["containers"][0]["args"])


def test_the_auditor_roles_grant_reading_audit_entries_only(repo_root: Path) -> None:
    docs = render_chart(repo_root)
    for name in ("regsandbox-platform-auditor", "regsandbox-tenant-auditor"):
        role = _find(docs, "ClusterRole", name)
        assert role is not None, name
        assert role["rules"] == AUDITENTRIES, name
    # Readers are off by default: the service may check writers' tokens (TokenReview) and
    # nothing more — no SubjectAccessReview, no --kube-readers.
    role = _find(docs, "ClusterRole", "regsandbox-audit-reviews")
    assert role is not None
    assert role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    args = _audit_args(docs)
    assert "--kube-readers" not in args
    assert [a for a in args if a.startswith("--kube-writer")] == [
        "--kube-writer=system:serviceaccount:default:regsandbox-operator",
        "--kube-writer=system:serviceaccount:default:regsandbox-gateway",
    ]


def test_kubernetes_readers_give_the_service_the_two_reviews_and_close_open_reads(
    repo_root: Path,
) -> None:
    docs = render_chart(
        repo_root,
        "audit.kubernetesReaders.enabled=true",
        "audit.openReads=true",
        "audit.anchor.enabled=false",
    )
    role = _find(docs, "ClusterRole", "regsandbox-audit-reviews")
    assert role is not None
    assert role["rules"] == REVIEWS
    binding = _find(docs, "ClusterRoleBinding", "regsandbox-audit-reviews")
    assert binding is not None
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "regsandbox-audit", "namespace": "default"}
    ]
    args = _audit_args(docs)
    assert "--kube-readers" in args
    assert "--audience=regsandbox-audit" in args
    assert "--open-reads" not in args
    sts = _find(docs, "StatefulSet", "rs-audit")
    assert sts is not None
    assert sts["spec"]["template"]["spec"]["automountServiceAccountToken"] is True


def test_the_service_identity_holds_exactly_the_two_reviews(setup: Setup) -> None:
    user = f"system:serviceaccount:{setup.auditors_ns}:audit-service"
    api = client.ApiClient(setup.admin.configuration)
    api.set_default_header("Impersonate-User", user)
    for namespace in ("", setup.auditors_ns, f"tenant-{setup.tenant_a}"):
        review = client.V1SelfSubjectRulesReview(
            spec=client.V1SelfSubjectRulesReviewSpec(namespace=namespace or "default")
        )
        status = client.AuthorizationV1Api(api).create_self_subject_rules_review(review).status
        held = {
            (group, resource, verb)
            for rule in status.resource_rules
            for group in rule.api_groups or [""]
            for resource in rule.resources or []
            for verb in rule.verbs
        }
        held -= {
            ("authorization.k8s.io", "selfsubjectaccessreviews", "create"),
            ("authorization.k8s.io", "selfsubjectrulesreviews", "create"),
            ("authentication.k8s.io", "selfsubjectreviews", "create"),
        }
        assert held == {
            ("authentication.k8s.io", "tokenreviews", "create"),
            ("authorization.k8s.io", "subjectaccessreviews", "create"),
        }, namespace


def test_readers_reach_the_service_only_from_the_peers_the_values_name(repo_root: Path) -> None:
    assert _find(render_chart(repo_root), "NetworkPolicy", "rs-audit-readers") is None
    peer = '[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"ingress"}}}]'
    docs = render_chart(
        repo_root,
        "audit.kubernetesReaders.enabled=true",
        f"audit.kubernetesReaders.from={peer}",
        set_flag="--set-json",
    )
    policy = _find(docs, "NetworkPolicy", "rs-audit-readers")
    assert policy is not None
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
            ],
            # the read server's port: readers never reach the writers' 8080
            "ports": [{"protocol": "TCP", "port": 8081}],
        }
    ]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "audit"
    single = render_chart(
        repo_root,
        "audit.kubernetesReaders.enabled=true",
        f"audit.kubernetesReaders.from={peer}",
        "audit.readServer.enabled=false",
        set_flag="--set-json",
    )
    policy = _find(single, "NetworkPolicy", "rs-audit-readers")
    assert policy is not None
    assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_the_chart_serves_reads_from_the_read_server_by_default(repo_root: Path) -> None:
    docs = render_chart(repo_root)
    service = _find(docs, "Service", "rs-audit")
    assert service is not None
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"http": 8080, "read": 8081}
    audit = _find(docs, "StatefulSet", "rs-audit")
    assert audit is not None
    [container] = audit["spec"]["template"]["spec"]["containers"]
    assert {"name": "read", "containerPort": 8081} in container["ports"]
    args = container["args"]
    assert "--read-listen=0.0.0.0:8081" in args
    assert "--read-nice=10" in args
    assert "--read-idle" in args
    assert "--read-rate=50000" in args
    # readiness stays on the writer: a read server down never takes appends away
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    off = render_chart(repo_root, "audit.readServer.enabled=false")
    service = _find(off, "Service", "rs-audit")
    assert service is not None
    assert [p["name"] for p in service["spec"]["ports"]] == ["http"]
    audit = _find(off, "StatefulSet", "rs-audit")
    assert audit is not None
    assert not any(
        a.startswith("--read-") for a in audit["spec"]["template"]["spec"]["containers"][0]["args"]
    )
