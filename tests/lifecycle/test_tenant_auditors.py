"""A Tenant's ``auditor`` members read that tenant's audit entries, and nothing else.

The operator (a real process, under the chart's RBAC) binds each auditor member to the
``regsandbox-tenant-auditor`` ClusterRole in ``tenant-<name>``; the real audit service,
asking the API server (TokenReview, SubjectAccessReview), then serves them their
tenant's entries and refuses another tenant's. Removing the member revokes it. The
API server's own SubjectAccessReviews show the auditor gets no other right: no Secret,
no Pod, no Sandbox, no ExportReview (so no approval), nothing in another tenant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from audit.access import CachedAuthority
from audit.entry import Actor, Event, Resource
from audit.log import AuditLog
from audit.note import Signer
from audit.service import AccessPolicy, create_app
from sandbox.api.tenant import TenantSpec
from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get
from sandbox.kube.audit_access import AUDIENCE, KubernetesReaders
from sandbox.provision.names import tenant_namespace
from sandbox.provision.rbac import TENANT_AUDITOR_CLUSTER_ROLE
from sandbox.provision.tenant_plan import MAX_TENANT_NAME, name_problem
from tests.servers import serve_app

from .helpers import ready_sandbox, unique

pytestmark = pytest.mark.usefixtures("crds")


def _token(api: client.ApiClient, namespace: str, name: str) -> str:
    request = {"spec": {"audiences": [AUDIENCE], "expirationSeconds": 3600}}
    made = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
    return str(made.status.token)


def _allowed(
    api: client.ApiClient,
    user: str,
    groups: list[str],
    verb: str,
    resource: str,
    namespace: str | None,
    group: str = "",
    subresource: str | None = None,
) -> bool:
    """The API server's answer: may ``user`` ``verb`` ``resource`` in ``namespace``?"""
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=groups,
            resource_attributes=client.V1ResourceAttributes(
                group=group,
                resource=resource,
                verb=verb,
                namespace=namespace,
                subresource=subresource,
            ),
        )
    )
    answer = client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(answer.status.allowed)


def _auditor_subjects(api: client.ApiClient, tenant: str) -> list[tuple[str, str]]:
    binding = get(api, "RoleBinding", TENANT_AUDITOR_CLUSTER_ROLE, tenant_namespace(tenant))
    if binding is None:
        return []
    return [(s["kind"], s["name"]) for s in binding.get("subjects") or []]


@pytest.fixture
def auditor_sa(admin_api: client.ApiClient) -> Iterator[tuple[str, str]]:
    """A ServiceAccount the auditor member names: (namespace, name)."""
    ns = unique("auditors")
    core = client.CoreV1Api(admin_api)
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_service_account(ns, {"metadata": {"name": "bank-auditor"}})
    try:
        yield ns, "bank-auditor"
    finally:
        core.delete_namespace(ns)


def test_an_auditor_member_reads_its_tenant_only_until_removed(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    auditor_sa: tuple[str, str],
    tmp_path: Path,
) -> None:
    sa_ns, sa = auditor_sa
    auditor = f"system:serviceaccount:{sa_ns}:{sa}"
    owner = unique("owner")
    members = [{"user": owner, "role": "owner"}, {"user": auditor, "role": "auditor"}]
    make = tenant_factory
    tenant_a = make(members=members)
    tenant_b = make(members=[{"user": owner, "role": "owner"}])

    # The operator binds the auditor, and only the auditor, to the tenant auditor role.
    operator.wait_until(
        lambda: _auditor_subjects(admin_api, tenant_a) == [("User", auditor)],
        30,
        f"the auditor's RoleBinding in {tenant_namespace(tenant_a)}",
    )
    operator.wait_until(
        lambda: get(
            admin_api, "RoleBinding", TENANT_AUDITOR_CLUSTER_ROLE, tenant_namespace(tenant_b)
        ),
        30,
        f"the (empty) auditor RoleBinding in {tenant_namespace(tenant_b)}",
    )
    assert _auditor_subjects(admin_api, tenant_b) == []

    signer = Signer.generate("audit.regsandbox.test/tenant-auditors")
    log = AuditLog.create(tmp_path / "log", signer.name, signer)
    own, other = [], []
    for n in range(4):
        for tenant, seen in ((tenant_a, own), (tenant_b, other)):
            seen.append(
                log.append(
                    Event(
                        actor=Actor(user=f"analyst-{n}"),
                        action="dataset.read",
                        resource=Resource(kind="Dataset", name=f"d{n}", tenant=tenant),
                        outcome="success",
                    )
                )
            )
    log.publish_checkpoint()
    authority = CachedAuthority(KubernetesReaders(admin_api, tenant_namespace), ttl=0)
    policy = AccessPolicy(writers={}, readers={}, authority=authority)
    headers = {"Authorization": f"Bearer {_token(admin_api, sa_ns, sa)}"}
    try:
        with serve_app(create_app(log, policy)) as url:
            mine = httpx.get(f"{url}/v1/tenants/{tenant_a}/entries", headers=headers)
            assert mine.status_code == 200, mine.text
            assert [e["index"] for e in mine.json()["entries"]] == own
            assert (
                httpx.get(
                    f"{url}/v1/tenants/{tenant_a}/entries/{own[0]}", headers=headers
                ).status_code
                == 200
            )
            for path in (
                f"/v1/tenants/{tenant_b}/entries",
                f"/v1/tenants/{tenant_b}/entries/{other[0]}",
                f"/v1/tenants/{tenant_a}/entries/{other[0]}",
                "/v1/entries?start=0&end=2",
                "/tlog/checkpoint",
            ):
                assert httpx.get(url + path, headers=headers).status_code == 403, path

            # Removing the member empties the binding and revokes the reads.
            body = get(admin_api, "Tenant", tenant_a)
            assert body is not None
            apply(
                admin_api,
                {
                    "apiVersion": "regsandbox.io/v1alpha1",
                    "kind": "Tenant",
                    "metadata": {"name": tenant_a},
                    "spec": {**body["spec"], "members": [{"user": owner, "role": "owner"}]},
                },
            )
            operator.wait_until(
                lambda: _auditor_subjects(admin_api, tenant_a) == [],
                30,
                "the auditor's removal from the RoleBinding",
            )
            gone = httpx.get(f"{url}/v1/tenants/{tenant_a}/entries", headers=headers)
            assert gone.status_code == 403, gone.text
    finally:
        log.close()


def test_an_auditor_member_gets_no_other_right(
    admin_api: client.ApiClient, operator: OperatorProcess, tenant_factory: Callable[..., str]
) -> None:
    """Against an owner and a reviewer of the same tenant as the control."""
    auditor, owner, reviewer = unique("auditor"), unique("owner"), unique("reviewer")
    group = unique("audit-office")
    make = tenant_factory
    members = [
        {"user": owner, "role": "owner"},
        {"user": reviewer, "role": "reviewer"},
        {"user": auditor, "role": "auditor"},
        {"group": group, "role": "auditor"},
    ]
    tenant = make(members=members)
    other = make(members=[{"user": owner, "role": "owner"}])
    home = tenant_namespace(tenant)
    operator.wait_until(
        lambda: (
            sorted(_auditor_subjects(admin_api, tenant)) == [("Group", group), ("User", auditor)]
        ),
        30,
        f"the auditors' RoleBinding in {home}",
    )
    _, sandbox_ns = ready_sandbox(admin_api, operator, tenant)

    def may(user: str, verb: str, resource: str, namespace: str | None, **kw: str) -> bool:
        return _allowed(admin_api, user, [], verb, resource, namespace, **kw)

    audit = {"group": "regsandbox.io"}
    # What the role is for: the tenant's entries, in the tenant's home only.
    assert may(auditor, "list", "auditentries", home, **audit)
    assert may(auditor, "get", "auditentries", home, **audit)
    assert _allowed(admin_api, unique("someone"), [group], "list", "auditentries", home, **audit)
    assert not may(auditor, "list", "auditentries", tenant_namespace(other), **audit)
    assert not may(auditor, "list", "auditentries", None, **audit)
    # Nothing else, where the owner and the reviewer (the controls) have their rights.
    assert may(owner, "get", "pods", sandbox_ns)
    assert not may(auditor, "get", "pods", sandbox_ns)
    assert not may(auditor, "create", "pods", sandbox_ns, subresource="exec")
    for ns in (sandbox_ns, home):
        assert not may(auditor, "get", "secrets", ns)
        assert not may(auditor, "list", "secrets", ns)
        assert not may(auditor, "get", "persistentvolumeclaims", ns)
    assert may(reviewer, "create", "exportreviews", home, group="regsandbox.io")
    assert not may(auditor, "create", "exportreviews", home, group="regsandbox.io")
    assert not may(
        auditor, "update", "modelexports", home, group="regsandbox.io", subresource="status"
    )
    assert may(owner, "list", "sandboxes", home, group="regsandbox.io")
    assert not may(auditor, "list", "sandboxes", home, group="regsandbox.io")
    assert not may(auditor, "list", "modelexports", home, group="regsandbox.io")
    assert not may(auditor, "get", "tenants", None, group="regsandbox.io")


@pytest.mark.parametrize(
    ("member", "role"),
    [
        ({"group": "system:authenticated"}, "auditor"),
        ({"group": "system:unauthenticated"}, "auditor"),
        ({"group": "system:serviceaccounts"}, "auditor"),
        ({"user": "system:anonymous"}, "auditor"),
        ({"group": "system:authenticated"}, "owner"),
    ],
)
def test_a_tenant_cannot_name_everyone_as_a_member(
    admin_api: client.ApiClient,
    tenant_factory: Callable[..., str],
    member: dict[str, str],
    role: str,
) -> None:
    """Naming every (or no) user as a member would let the whole cluster — or anyone who
    can reach the API server — read a regulated tenant's audit entries (or its data):
    the API server refuses such a Tenant, so the operator never binds it."""
    with pytest.raises(client.ApiException) as refused:
        tenant_factory(members=[{**member, "role": role}])
    assert refused.value.status == 422
    assert "may not be everyone" in str(refused.value.body)
    with pytest.raises(ValueError, match="may not be everyone"):
        TenantSpec.model_validate(
            {
                "organisation": "Org",
                "sector": "finance",
                "jurisdiction": "LU",
                "members": [{**member, "role": role}],
            }
        )


def test_a_tenant_whose_home_namespace_would_be_shortened_is_refused(
    admin_api: client.ApiClient, operator: OperatorProcess
) -> None:
    """A namespace name has at most 63 characters; a longer ``tenant-<name>`` used to be
    cut and given a hash suffix — a name another Tenant can take outright (the name of
    the cut namespace, less ``tenant-``), and then the two Tenants' members and auditors
    are bound in one namespace, where the audit service asks about both. So a name that
    does not fit is refused, and nothing is made for it."""
    long_name = unique("t") + "-" + "x" * 60
    long_name = long_name[:60]
    squatted = tenant_namespace(long_name)
    assert squatted != f"tenant-{long_name}"  # the shortened name a squatter could take
    body = {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "Tenant",
        "metadata": {"name": long_name},
        "spec": {
            "organisation": "Org with a long name",
            "sector": "research",
            "jurisdiction": "LU",
            "members": [{"user": "long-auditor", "role": "auditor"}],
        },
    }
    apply(admin_api, body)
    try:

        def refused() -> bool:
            status = (get(admin_api, "Tenant", long_name) or {}).get("status") or {}
            return any(
                c.get("type") == "Ready"
                and c.get("status") == "False"
                and c.get("reason") == "InvalidName"
                for c in status.get("conditions") or []
            )

        operator.wait_until(refused, 30, f"Tenant {long_name} refused for its name")
        assert get(admin_api, "Namespace", squatted) is None
        assert get(admin_api, "Namespace", f"tenant-{long_name}") is None
    finally:
        delete(admin_api, "Tenant", long_name)


def test_the_longest_tenant_name_still_has_its_own_home_namespace() -> None:
    fits, too_long = "a" * MAX_TENANT_NAME, "a" * (MAX_TENANT_NAME + 1)
    assert name_problem(fits) is None
    assert tenant_namespace(fits) == f"tenant-{fits}"
    assert name_problem(too_long) is not None
