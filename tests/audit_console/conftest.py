"""The audit console on a real control plane: the chart's roles, auditors, a log to read.

The same set-up as ``tests/audit_access`` (its helpers render the chart's ClusterRoles,
bind them and mint TokenRequest tokens for the audit audience): ``tenant-a`` is a
tenant auditor of the bank, ``platform`` a platform auditor, ``nobody`` has no binding,
``wrong-audience`` is the bank auditor's token for the dataset gateway. The log holds
what an officer would look for — dataset reads in sandboxes, a refused read, a model
export with its review — for two tenants that use the same dataset and sandbox names,
and one entry whose details carry markup and quotes, as a tenant's workload could send.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from audit.access import CachedAuthority
from audit.entry import Actor, DecisionRecord, Event, Outcome, Resource
from audit.log import AuditLog
from audit.note import Signer
from audit.service import AccessPolicy
from sandbox.devenv.controlplane import ControlPlane
from sandbox.kube.audit_access import KubernetesReaders
from sandbox.provision.names import tenant_namespace
from tests.audit_access.conftest import auditor_identities
from tests.audit_service.conftest import serving_reads

ORIGIN = "audit.regsandbox.test/console"
HOSTILE = "<script>window.__pwned = 1</script> said \"yes\" & 'no'"
"""Details a tenant's workload controls: markup, both quotes, an ampersand."""
SECRET_OF_B = "clinic-only-marker"
"""A string only in the second tenant's entries: never on the first tenant's pages."""
JANUARY = datetime(2026, 1, 15, 9, 30, tzinfo=UTC)
MARCH = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)


@dataclass
class Console:
    """A served log, its tenants, the auditors' tokens, and where each kind of entry is."""

    url: str
    log: AuditLog
    signer: Signer
    tenant_a: str
    tenant_b: str
    tokens: dict[str, str]
    service_kubeconfig: Path
    """Kubeconfig of the audit service's own identity (bound to the review role only)."""
    policy: AccessPolicy
    """The service's access policy (its reader authority asks the control plane)."""
    suffix: str
    """Suffix of every cluster-scoped object made here (the roles' names end in it)."""
    indices: dict[str, list[int]] = field(default_factory=dict)
    """Labels (``a-loans-read``, ``b-loans-read``, ``a-hostile`` …) → entry indices."""

    def of(self, *labels: str) -> list[int]:
        """Indices of entries with any of ``labels``, in log order."""
        return sorted(i for label in labels for i in self.indices.get(label, []))


def _read(tenant: str, dataset: str, n: int, when: datetime, actor: str) -> Event:
    return Event(
        time=when + timedelta(minutes=n),
        actor=Actor(service_account=f"{tenant_namespace(tenant)}/{actor}"),
        action="dataset.read",
        resource=Resource(
            kind="Dataset",
            name=dataset,
            namespace=f"sbx-{tenant}-s1",
            tenant=tenant,
            sandbox="s1",
        ),
        decision=DecisionRecord(allow=True),
        outcome="success",
        details={"key": f"part-{n}.parquet", "bytes": 1000 + n},
    )


def _export(tenant: str, action: str, outcome: Outcome, user: str, **details: str) -> Event:
    return Event(
        time=MARCH + timedelta(hours=1),
        actor=Actor(user=user),
        action=action,
        resource=Resource(
            kind="ModelExport",
            name="risk-model",
            namespace=f"sbx-{tenant}-s1",
            tenant=tenant,
            sandbox="s1",
        ),
        outcome=outcome,
        details=dict(details),
    )


def _fill(log: AuditLog, a: str, b: str) -> dict[str, list[int]]:
    """The entries of both tenants, interleaved as a real log would have them."""
    plan: list[tuple[str, Event]] = []
    for n in range(3):
        plan.append(("a-loans-read", _read(a, "loans", n, JANUARY, "analyst")))
        plan.append(("b-loans-read", _read(b, "loans", n, JANUARY, SECRET_OF_B)))
    for n in range(2):
        plan.append(("a-loans-read-march", _read(a, "loans", n, MARCH, "analyst")))
        plan.append(("a-cards-read", _read(a, "cards", n, MARCH, "analyst")))
    denied = _read(a, "loans", 9, MARCH, "intruder").model_copy(
        update={"outcome": "denied", "decision": DecisionRecord(allow=False, codes=("NoGrant",))}
    )
    plan.append(("a-denied", denied))
    plan.append(
        (
            "a-hostile",
            _read(a, "notes", 0, MARCH, "analyst").model_copy(
                update={"details": {"note": HOSTILE}}
            ),
        )
    )
    plan.append(("a-export", _export(a, "model.export.submitted", "success", "alice@bank")))
    plan.append(
        (
            "a-export",
            _export(
                a,
                "model.export.reviewed",
                "success",
                "carol@bank",
                review="review-1",
                decision="approve",
                comment=HOSTILE,
            ),
        )
    )
    plan.append(("a-export", _export(a, "model.export.released", "success", "operator")))
    plan.append(("b-export", _export(b, "model.export.submitted", "success", SECRET_OF_B)))
    plan.append(
        (
            "platform",
            Event(
                actor=Actor(user="platform-admin"),
                action="policy.changed",
                resource=Resource(kind="PolicySet", name="default"),
                outcome="success",
            ),
        )
    )
    for n in range(60):  # more than a page of one tenant's reads
        plan.append(("a-bulk-read", _read(a, "bulk", n, MARCH, "batch")))
    indices: dict[str, list[int]] = {}
    for label, event in plan:
        indices.setdefault(label, []).append(log.append(event))
    log.publish_checkpoint()
    return indices


@pytest.fixture(scope="module")
def console(
    request: pytest.FixtureRequest,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Console]:
    """Two tenants, three auditors, the log above, the audit service with its console.

    Parametrise it indirectly with ``read-server`` to serve the console from the read
    server (:mod:`audit.read_server`) instead of the writer's listener.
    """
    layout = getattr(request, "param", "writer")
    workdir = tmp_path_factory.mktemp("console-kube")
    with auditor_identities(control_plane, admin_api, repo_root, workdir, "console") as who:
        signer = Signer.generate(ORIGIN)
        log = AuditLog.create(tmp_path_factory.mktemp("console-log"), ORIGIN, signer)
        indices = _fill(log, who.tenant_a, who.tenant_b)
        authority = CachedAuthority(KubernetesReaders(who.service_api, tenant_namespace), ttl=0)
        policy = AccessPolicy(writers={}, readers={}, authority=authority)
        try:
            with serving_reads(layout, log, policy) as url:
                yield Console(
                    url,
                    log,
                    signer,
                    who.tenant_a,
                    who.tenant_b,
                    who.tokens,
                    who.kubeconfig,
                    policy,
                    who.suffix,
                    indices,
                )
        finally:
            log.close()
