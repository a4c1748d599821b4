"""The chart behaves as GitOps tools (Argo CD, Flux) and a platform engineer expect.

- Rendering is a pure function of the values: two renders are byte-identical, or Argo CD
  shows a permanent diff and re-applies on every sync.
- Every rendered object is accepted by the real API server's dry run (strict field
  validation, CEL type-checking of the admission policies) — the schema check
  ``kubeconform`` would do, by the authority itself.
- ``helm upgrade`` from the previous chart keeps what cannot be recreated: the audit
  log's volume claim and the key Secrets.
- ``NOTES.txt`` names what was installed and the commands to run next.
"""

from __future__ import annotations

import subprocess
import tarfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.toolchain import tool_path
from sandbox.kube.apply import apply, get
from sandbox.testing import api_client, install_crds

pytestmark = pytest.mark.integration

REQUIRED = ("cluster.region=onprem:lu-national-1", "cluster.jurisdiction=LU")
VALUE_SETS = [
    (),
    ("operator.policyEngine=opa", "operator.opaSidecar.enabled=true"),
    ("operator.replicas=1", "audit.openReads=false"),
]
"""Value sets rendered by the tests (``--set`` assignments added to :data:`REQUIRED`)."""

PREVIOUS_CHART_COMMIT = "f1c7645"
"""The chart an upgrade starts from (the last one before this release's changes)."""


def _helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool_path("helm")), *args], capture_output=True, text=True, check=check, timeout=120
    )


def _sets(*assignments: str) -> list[str]:
    return [arg for a in (*REQUIRED, *assignments) for arg in ("--set", a)]


def _render(chart: Path, namespace: str, *assignments: str) -> str:
    return _helm("template", "rs", str(chart), "-n", namespace, *_sets(*assignments)).stdout


@pytest.mark.parametrize("assignments", VALUE_SETS, ids=["defaults", "opa-sidecar", "one-replica"])
def test_the_chart_renders_identically_twice(repo_root: Path, assignments: tuple[str, ...]) -> None:
    chart = repo_root / "charts/regsandbox"
    first = _render(chart, "regsandbox-system", *assignments)
    second = _render(chart, "regsandbox-system", *assignments)
    if first != second:
        changed = [
            f"{a.get('kind')}/{a.get('metadata', {}).get('name')}"
            for a, b in zip(yaml.safe_load_all(first), yaml.safe_load_all(second), strict=False)
            if a != b
        ]
        pytest.fail(f"two renders with the same values differ in {changed}")


def test_notes_name_what_was_installed_and_the_next_commands(repo_root: Path) -> None:
    chart = repo_root / "charts/regsandbox"
    out = _helm(
        "install", "rs", str(chart), "-n", "sbx-platform", "--dry-run=client", *_sets()
    ).stdout
    notes = out.split("NOTES:", 1)[1]
    rendered = [d for d in yaml.safe_load_all(_render(chart, "sbx-platform")) if d]
    workloads = [
        f"{d['kind']} {d['metadata']['name']}"
        for d in rendered
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    assert workloads
    for workload in workloads:
        assert workload in notes, workload
    assert 'release "rs" in namespace sbx-platform' in notes
    assert "kubectl -n sbx-platform rollout status deployment/rs-operator" in notes
    assert "kubectl apply -f examples/finance/tenant.yaml" in notes
    assert "sandboxctl audit verify" in notes


def _dry_run(api: client.ApiClient, obj: dict[str, Any]) -> str | None:
    """Server-side dry-run create with strict field validation; the refusal, or None."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import DynamicApiError

    dynamic = DynamicClient(api)
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace = obj["metadata"].get("namespace") if resource.namespaced else None
    try:
        resource.create(
            body=obj,
            namespace=namespace,
            query_params=[("dryRun", "All"), ("fieldValidation", "Strict")],
        )
    except DynamicApiError as exc:
        if exc.status == 409:  # exists already (a ClusterRole from another test): dry-run replace
            return None
        return f"{obj['kind']}/{obj['metadata']['name']}: {exc.summary()}"
    return None


@pytest.mark.parametrize("assignments", VALUE_SETS, ids=["defaults", "opa-sidecar", "one-replica"])
def test_every_rendered_object_passes_the_api_server_dry_run(
    admin_api: client.ApiClient, repo_root: Path, assignments: tuple[str, ...]
) -> None:
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")
    namespace = "chart-dry-run"
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    docs = [
        d
        for d in yaml.safe_load_all(
            _render(repo_root / "charts/regsandbox", namespace, *assignments)
        )
        if d
    ]
    assert len(docs) > 20
    refused = [r for d in docs if (r := _dry_run(admin_api, d))]
    assert refused == []


def test_a_misspelt_field_is_refused_by_the_dry_run(admin_api: client.ApiClient) -> None:
    """The dry run above would catch a typo in a template (strict field validation)."""
    apply(
        admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "chart-dry-run"}}
    )
    bad = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "typo", "namespace": "chart-dry-run"},
        "spec": {"minAvailble": 1, "selector": {"matchLabels": {"a": "b"}}},
    }
    refusal = _dry_run(admin_api, bad)
    assert refusal is not None
    assert "minAvailble" in refusal


@pytest.fixture(scope="module")
def upgrade_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A control plane of its own: a Helm release owns cluster-scoped objects by name."""
    plane = ControlPlane(tmp_path_factory.mktemp("upgrade-cp"))
    plane.up()
    try:
        yield plane
    finally:
        plane.down()


def _previous_chart(repo_root: Path, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(repo_root), "archive", PREVIOUS_CHART_COMMIT, "charts/regsandbox"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "charts/regsandbox"


def _secret(name: str, namespace: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }


def test_upgrade_from_the_previous_chart_keeps_the_audit_log_claim_and_the_keys(
    upgrade_plane: ControlPlane, repo_root: Path, tmp_path: Path
) -> None:
    namespace = "regsandbox-system"
    kubeconfig = ["--kubeconfig", str(upgrade_plane.admin_kubeconfig)]
    admin = api_client(upgrade_plane.admin_kubeconfig)
    previous = _previous_chart(repo_root, tmp_path)
    # What exists before the install: the signing key from the key ceremony.
    apply(admin, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    apply(admin, _secret("regsandbox-audit-signing-key", namespace, {"signing.key": "k"}))
    installed = _helm(
        "install",
        "rs",
        str(previous),
        "-n",
        namespace,
        "--wait=false",
        *kubeconfig,
        *_sets(),
        check=False,
    )
    assert installed.returncode == 0, installed.stderr

    # What the running release makes and must never lose: the audit log's claim (from
    # the StatefulSet's template, as its controller names it) and the operator's keys.
    statefulset = get(admin, "StatefulSet", "rs-audit", namespace)
    assert statefulset is not None
    template = statefulset["spec"]["volumeClaimTemplates"][0]
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{template['metadata']['name']}-rs-audit-0", "namespace": namespace},
        "spec": template["spec"],
    }
    apply(admin, claim)
    apply(admin, _secret("regsandbox-kek", namespace, {"kek": "wrapped"}))
    apply(admin, _secret("regsandbox-key-acme-study", namespace, {"key": "wrapped"}))
    kept = {
        ("PersistentVolumeClaim", claim["metadata"]["name"]),
        ("Secret", "regsandbox-audit-signing-key"),
        ("Secret", "regsandbox-kek"),
        ("Secret", "regsandbox-key-acme-study"),
    }
    before = {(k, n): get(admin, k, n, namespace) for k, n in kept}

    upgraded = _helm(
        "upgrade",
        "rs",
        str(repo_root / "charts/regsandbox"),
        "-n",
        namespace,
        "--wait=false",
        *kubeconfig,
        *_sets(),
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    for (kind, name), old in before.items():
        new = get(admin, kind, name, namespace)
        assert new is not None, f"{kind}/{name} was deleted by the upgrade"
        assert old is not None
        assert new["metadata"]["uid"] == old["metadata"]["uid"], f"{kind}/{name} was recreated"
        assert new.get("data") == old.get("data"), f"{kind}/{name} changed"
    after = get(admin, "StatefulSet", "rs-audit", namespace)
    assert after is not None
    assert (
        after["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        == (template["metadata"]["name"])
    )
    history = _helm("history", "rs", "-n", namespace, "-o", "yaml", *kubeconfig).stdout
    assert [r["status"] for r in yaml.safe_load(history)] == ["superseded", "deployed"]


def _docs(repo_root: Path, *assignments: str) -> list[dict[str, Any]]:
    rendered = _render(repo_root / "charts/regsandbox", "regsandbox-system", *assignments)
    return [d for d in yaml.safe_load_all(rendered) if d]


def test_two_electing_operator_replicas_and_a_disruption_budget_by_default(
    repo_root: Path,
) -> None:
    docs = _docs(repo_root)
    operator = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "rs-operator"
    )
    assert operator["spec"]["replicas"] == 2
    env = {e["name"]: e for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REGSANDBOX_LEADER_ELECTION"]["value"] == "true"
    assert env["REGSANDBOX_LEADER_ELECTION_IDENTITY"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "metadata.name"}
    }
    timings = [
        float(env[f"REGSANDBOX_LEADER_ELECTION_{k}_SECONDS"]["value"])
        for k in ("RETRY", "RENEW_DEADLINE", "LEASE")
    ]
    assert timings == sorted(set(timings))  # retry < renew deadline < lease
    budget = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    labels = operator["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # One replica: no budget, which would block every node drain.
    assert not [
        d for d in _docs(repo_root, "operator.replicas=1") if d["kind"] == "PodDisruptionBudget"
    ]
