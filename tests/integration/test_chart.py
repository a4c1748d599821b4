"""The Helm chart: lint, render, install on the real API server, and RBAC that is enough."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.operator_process import OperatorProcess, service_account_kubeconfig
from sandbox.devenv.toolchain import tool_path
from sandbox.kube.apply import apply, get
from sandbox.policy.opa import OPA_SIDECAR_ENV
from sandbox.provision.rbac import chart_rules, render_rules
from sandbox.testing import api_client

pytestmark = pytest.mark.integration

NAMESPACE = "regsandbox-system"


def helm(chart: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tool_path("helm")), *args], capture_output=True, text=True, check=check, timeout=120
    )


def test_chart_rbac_files_are_generated_from_the_code(repo_root: Path) -> None:
    directory = repo_root / "charts/regsandbox/files/rbac"
    for name, rules in chart_rules().items():
        path = directory / f"{name}.yaml"
        assert path.read_text() == render_rules(rules), (
            f"{path} is stale: run `python -m sandbox.provision.rbac`"
        )


def test_lint_and_template_with_default_and_other_values(repo_root: Path) -> None:
    chart = repo_root / "charts/regsandbox"
    lint = helm(chart, "lint", str(chart), "--strict", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    default = list(yaml.safe_load_all(helm(chart, "template", "rs", str(chart)).stdout))
    kinds = sorted({d["kind"] for d in default if d})
    assert {"Deployment", "StatefulSet", "ClusterRole", "NetworkPolicy", "Secret"} <= set(kinds)
    for doc in default:
        if doc and doc["kind"] in ("Deployment", "StatefulSet"):
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for container in pod["containers"]:
                assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "regsandbox"
    opa = helm(
        chart,
        "template",
        "rs",
        str(chart),
        "--set",
        "operator.policyEngine=opa",
        "--set",
        "operator.opaSidecar.enabled=true",
        "--set",
        "operator.storageProfile.kind=aws-ebs",
        "--set",
        "gateway.s3Endpoints={https://s3.lu-national-1.example.lu}",
    ).stdout
    assert "REGSANDBOX_OPA_URL" in opa
    sidecar = next(
        c
        for d in yaml.safe_load_all(opa)
        if d and d["kind"] == "Deployment" and d["metadata"]["name"].endswith("operator")
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["name"] == "opa"
    )
    assert {e["name"]: e["value"] for e in sidecar["env"]} == OPA_SIDECAR_ENV
    assert '\\"https://s3.lu-national-1.example.lu\\"' in opa
    assert '\\"kind\\":\\"aws-ebs\\"' in opa
    policies = {d["metadata"]["name"]: d for d in default if d and d["kind"] == "SandboxPolicy"}
    assert sorted(policies) == ["egress-https-only", "egress-narrow-cidr", "lifetime-review"]
    assert policies["egress-https-only"]["spec"]["enforcement"] == "warn"
    assert policies["egress-narrow-cidr"]["spec"]["data"]["minPrefixIPv4"] == 24
    assert policies["lifetime-review"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == (
        "regsandbox"
    )
    tuned = helm(
        chart,
        "template",
        "rs",
        str(chart),
        "--set",
        "defaultPolicies.enforcement.egress-https-only=deny",
        "--set",
        "defaultPolicies.exclude={lifetime-review}",
    ).stdout
    tuned_policies = {
        d["metadata"]["name"]: d["spec"]["enforcement"]
        for d in yaml.safe_load_all(tuned)
        if d and d["kind"] == "SandboxPolicy"
    }
    assert tuned_policies == {"egress-https-only": "deny", "egress-narrow-cidr": "deny"}
    off = helm(chart, "template", "rs", str(chart), "--set", "defaultPolicies.enabled=false")
    assert "kind: SandboxPolicy" not in off.stdout
    bad = helm(
        chart, "template", "rs", str(chart), "--set", "cluster.jurisdiction=lux", check=False
    )
    assert bad.returncode != 0
    assert "jurisdiction" in bad.stderr


@pytest.fixture(scope="module")
def chart_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("chart-cp"))
    plane.up()
    try:
        yield plane
    finally:
        plane.down()


def _ready(obj: dict[str, Any] | None) -> bool:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return bool(cond["status"] == "True")
    return False


def _ready_condition(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Ready":
            return cond  # type: ignore[no-any-return]
    return None


def _accepted(obj: dict[str, Any] | None) -> bool:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == "Accepted":
            return bool(cond["status"] == "True")
    return False


def test_install_then_operator_as_chart_identity_reconciles_and_needs_every_rule(
    chart_plane: ControlPlane, repo_root: Path, tmp_path: Path
) -> None:
    chart = repo_root / "charts/regsandbox"
    kubeconfig = str(chart_plane.admin_kubeconfig)
    installed = helm(
        chart,
        "install",
        "rs",
        str(chart),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--kubeconfig",
        kubeconfig,
        "--wait=false",
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    admin = api_client(chart_plane.admin_kubeconfig)
    for name in ("rs-operator", "rs-gateway"):
        assert get(admin, "Deployment", name, NAMESPACE) is not None
    assert get(admin, "StatefulSet", "rs-audit", NAMESPACE) is not None

    signer = generate_key_file(tmp_path / "audit.key", "chart.test/audit")
    AuditLog.create(tmp_path / "audit", "chart.test/audit", signer).close()
    env = {
        "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
        "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
        "REGSANDBOX_NAMESPACE": NAMESPACE,
        "REGSANDBOX_AUDIT_LOG_DIR": str(tmp_path / "audit"),
        "REGSANDBOX_AUDIT_SIGNING_KEY": str(tmp_path / "audit.key"),
        "REGSANDBOX_RESYNC_SECONDS": "1",
        "REGSANDBOX_METRICS_PORT": "0",
    }
    sa = service_account_kubeconfig(admin, NAMESPACE, tmp_path / "sa.kubeconfig")

    def run_example(operator_log: Path, sandbox: str) -> tuple[OperatorProcess, str]:
        proc = OperatorProcess(sa, env, operator_log).start()
        docs = [
            d
            for f in ("tenant.yaml", "datasets.yaml", "sandbox-fraud-model.yaml")
            for d in yaml.safe_load_all((repo_root / "examples/finance" / f).read_text())
            if d
        ]
        for doc in docs:
            if doc["kind"] == "Sandbox":
                doc["metadata"]["name"] = sandbox
                proc.wait_until(
                    lambda: get(admin, "Namespace", "tenant-lux-bank"), 30, "the tenant home"
                )
            apply(admin, doc)
        return proc, sandbox

    proc, name = run_example(tmp_path / "op1.log", "fraud-model")
    try:
        proc.wait_until(
            lambda: _ready(get(admin, "Sandbox", name, "tenant-lux-bank")),
            60,
            "the example sandbox",
        )
        # The chart's default SandboxPolicies compile and are in force.
        for policy in ("egress-https-only", "egress-narrow-cidr", "lifetime-review"):
            proc.wait_until(
                lambda policy=policy: _accepted(get(admin, "SandboxPolicy", policy)),
                30,
                f"SandboxPolicy {policy} accepted",
            )
    finally:
        proc.stop()

    # Remove one permission the operator relies on: provisioning must now fail.
    rbac = client.RbacAuthorizationV1Api(admin)
    role = rbac.read_cluster_role("regsandbox-operator")
    role.rules = [r for r in role.rules if "networkpolicies" not in (r.resources or [])]
    rbac.replace_cluster_role("regsandbox-operator", role)
    proc, name = run_example(tmp_path / "op2.log", "fraud-model-2")
    try:
        with pytest.raises(TimeoutError):
            proc.wait_until(
                lambda: _ready(get(admin, "Sandbox", name, "tenant-lux-bank")), 15, "never"
            )
        assert "forbidden" in proc.log.read_text().lower()
        # The owner sees why in the Sandbox's status, not only the operator's log.
        ready = _ready_condition(get(admin, "Sandbox", name, "tenant-lux-bank"))
        assert ready is not None
        assert ready["reason"] == "ProvisioningFailed", ready
        assert "the API server refused NetworkPolicy default-deny" in ready["message"]
        assert "forbidden" in ready["message"]
    finally:
        proc.stop()
    listing = json.loads(
        helm(chart, "list", "-n", NAMESPACE, "-o", "json", "--kubeconfig", kubeconfig).stdout
    )
    assert [r["name"] for r in listing] == ["rs"]
