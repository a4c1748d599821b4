"""The Helm chart: lint, render, install on the real API server, and RBAC that is enough."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from audit.log import AuditLog
from audit.signing import generate_key_file
from operators.settings import OperatorSettings
from sandbox.api.accelerators import DEFAULT_ACCELERATORS
from sandbox.artifacts.admission import admission_policies
from sandbox.artifacts.outbox import OutboxSettings, RegisteredDestination
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.operator_process import OperatorProcess, service_account_kubeconfig
from sandbox.devenv.toolchain import tool_path
from sandbox.kube.apply import apply, get
from sandbox.policy.opa import OPA_SIDECAR_ENV
from sandbox.provision.accelerator_admission import accelerator_policies
from sandbox.provision.rbac import chart_rules, render_rules
from sandbox.storage.admission import claim_policies
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


def _template(chart: Path, *assignments: str) -> list[dict[str, Any]]:
    """The rendered objects of ``helm template rs`` with these ``--set`` assignments."""
    args = [arg for assignment in assignments for arg in ("--set", assignment)]
    rendered = helm(chart, "template", "rs", str(chart), *args).stdout
    return [d for d in yaml.safe_load_all(rendered) if d]


def _refusal(chart: Path, *assignments: str) -> str:
    """The error of ``helm template rs`` with these assignments, which must fail."""
    args = [arg for assignment in assignments for arg in ("--set", assignment)]
    refused = helm(chart, "template", "rs", str(chart), *args, check=False)
    assert refused.returncode != 0, f"helm template accepted {assignments}"
    return refused.stderr


def _pod(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return next(
        d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )


def _operator_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The operator container's literal environment (not the fieldRef and Secret ones)."""
    container = next(c for c in _pod(docs, "operator")["containers"] if c["name"] == "operator")
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def _operator_settings(env: dict[str, str]) -> OperatorSettings:
    """OperatorSettings read from exactly that environment, as the operator reads them."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("REGSANDBOX_"):
                patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        return OperatorSettings()  # type: ignore[call-arg]


def test_the_chart_renders_the_same_bytes_for_the_same_values(repo_root: Path) -> None:
    """GitOps-safe (Argo CD, Flux, `helm template`): nothing generated or looked up at render
    time — no Secret of the chart's own (writers append to the audit service with their
    projected ServiceAccount tokens), no random token that changes on every render."""
    chart = repo_root / "charts/regsandbox"
    first = helm(chart, "template", "rs", str(chart)).stdout
    assert helm(chart, "template", "rs", str(chart)).stdout == first
    assert "Secret" not in {d["kind"] for d in yaml.safe_load_all(first) if d}
    templates = "".join(p.read_text() for p in (chart / "templates").glob("*"))
    for generator in ("lookup", "randAlphaNum", "randAscii", "genCA", "uuidv4", "now"):
        assert f"{generator} " not in templates, generator


def test_lint_and_template_with_default_and_other_values(repo_root: Path) -> None:
    chart = repo_root / "charts/regsandbox"
    lint = helm(chart, "lint", str(chart), "--strict", check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    default = _template(chart)
    kinds = {d["kind"] for d in default}
    assert {"Deployment", "StatefulSet", "ClusterRole", "NetworkPolicy"} <= kinds
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds
    for doc in default:
        # Every object carries the chart's standard labels, the admission policies too.
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        labels = doc["metadata"].get("labels") or {}
        assert labels.get("app.kubernetes.io/part-of") == "regsandbox", where
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", where
        assert labels.get("app.kubernetes.io/instance") == "rs", where
        if doc["kind"] in ("Deployment", "StatefulSet"):
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            for container in pod["containers"] + pod.get("initContainers", []):
                security = container["securityContext"]
                assert security["readOnlyRootFilesystem"] is True, f"{where} {container['name']}"
    # The admission policies the chart ships are the ones the code applies, labels aside
    # (Helm orders objects by kind).
    shipped = [d for d in default if d["kind"].startswith("ValidatingAdmissionPolicy")]

    def unlabelled(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        bare = [{**d, "metadata": {"name": d["metadata"]["name"]}} for d in docs]
        return sorted(bare, key=lambda d: (d["kind"], d["metadata"]["name"]))

    assert unlabelled(shipped) == unlabelled(
        admission_policies() + claim_policies() + accelerator_policies()
    )
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in shipped} == {
        "admission"
    }
    env = _operator_env(default)
    assert "REGSANDBOX_EXPORT_OUTBOX" not in env  # no export is released unless configured
    assert "REGSANDBOX_OPA_URL" not in env
    assert _operator_settings(env).gateway_port == 8443

    opa = _template(
        chart,
        "operator.policyEngine=opa",
        "operator.opaSidecar.enabled=true",
        "operator.storageProfile.kind=aws-ebs",
        "operator.keyProvider=aws-kms",
        "gateway.s3Endpoints={https://s3.lu-national-1.example.lu}",
        "gateway.port=9443",
    )
    sidecar = next(c for c in _pod(opa, "operator")["containers"] if c["name"] == "opa")
    assert {e["name"]: e["value"] for e in sidecar["env"]} == OPA_SIDECAR_ENV
    gateway = _pod(opa, "gateway")["containers"][0]
    gateway_env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert json.loads(gateway_env["REGSANDBOX_GATEWAY_S3_ENDPOINTS"]) == [
        "https://s3.lu-national-1.example.lu"
    ]
    # The operator accepts what the chart renders, and its sandboxes' NetworkPolicies
    # allow the port the gateway listens on.
    settings = _operator_settings(_operator_env(opa))
    assert settings.opa_url == "http://127.0.0.1:8181"
    assert (settings.key_provider, settings.storage_profile.kind) == ("aws-kms", "aws-ebs")
    assert settings.gateway_port == 9443
    listen = gateway["args"].index("--listen")
    assert gateway["args"][listen + 1] == "0.0.0.0:9443"
    assert gateway["ports"] == [
        {"name": "http", "containerPort": 9443},
        {"name": "metrics", "containerPort": 9090},  # apart from the port sandboxes reach
    ]

    policies = {d["metadata"]["name"]: d for d in default if d["kind"] == "SandboxPolicy"}
    assert sorted(policies) == ["egress-https-only", "egress-narrow-cidr", "lifetime-review"]
    assert policies["egress-https-only"]["spec"]["enforcement"] == "warn"
    assert policies["egress-narrow-cidr"]["spec"]["data"]["minPrefixIPv4"] == 24
    tuned = _template(
        chart,
        "defaultPolicies.enforcement.egress-https-only=deny",
        "defaultPolicies.exclude={lifetime-review}",
    )
    tuned_policies = {
        d["metadata"]["name"]: d["spec"]["enforcement"]
        for d in tuned
        if d["kind"] == "SandboxPolicy"
    }
    assert tuned_policies == {"egress-https-only": "deny", "egress-narrow-cidr": "deny"}
    off = _template(chart, "defaultPolicies.enabled=false")
    assert not [d for d in off if d["kind"] == "SandboxPolicy"]
    assert "jurisdiction" in _refusal(chart, "cluster.jurisdiction=lux")


def test_template_refuses_values_the_operator_cannot_work_with(repo_root: Path) -> None:
    chart = repo_root / "charts/regsandbox"
    # Keys the storage profile cannot use: the operator would refuse to start.
    assert "/operator/keyProvider': value must be 'aws-kms'" in _refusal(
        chart, "operator.storageProfile.kind=aws-ebs"
    )
    assert "/operator/storageProfile/kind': value must be one of 'aws-ebs', 'ceph-rbd'" in (
        _refusal(chart, "operator.keyProvider=aws-kms")
    )
    # OPA with no server to ask: every decision would fail closed.
    assert "operator.opaSidecar.enabled=true, or operator.opaUrl" in _refusal(
        chart, "operator.policyEngine=opa"
    )
    assert "exclude each other" in _refusal(
        chart,
        "operator.policyEngine=opa",
        "operator.opaSidecar.enabled=true",
        "operator.opaUrl=http://opa.opa-system:8181",
    )
    # Exports without an outbox bucket.
    assert "/operator/exportOutbox/bucket" in _refusal(chart, "operator.exportOutbox.enabled=true")


def test_template_declares_the_accelerators_the_platform_offers(repo_root: Path) -> None:
    chart = repo_root / "charts/regsandbox"
    default = _operator_env(_template(chart))
    assert "REGSANDBOX_ACCELERATOR_RESOURCES" not in default
    assert _operator_settings(default).accelerator_resources == list(DEFAULT_ACCELERATORS)
    offered = "operator.acceleratorResources={nvidia.com/gpu,nvidia.com/mig-1g.10gb}"
    env = _operator_env(_template(chart, offered))
    assert _operator_settings(env).accelerator_resources == [
        "nvidia.com/gpu",
        "nvidia.com/mig-1g.10gb",
    ]
    assert "acceleratorResources" in _refusal(chart, "operator.acceleratorResources={gpu}")
    assert "acceleratorResources" in _refusal(
        chart, "operator.acceleratorResources={kubernetes.io/gpu}"
    )


def test_template_takes_the_local_kek_from_a_volume_outside_the_cluster(repo_root: Path) -> None:
    chart = repo_root / "charts/regsandbox"
    default = _template(chart)
    assert "REGSANDBOX_LOCAL_KEK_FILE" not in _operator_env(default)
    assert _operator_settings(_operator_env(default)).local_kek_file is None
    csi = {
        "driver": "secrets-store.csi.k8s.io",
        "readOnly": True,
        "volumeAttributes": {"secretProviderClass": "regsandbox-kek"},
    }
    docs = _template(
        chart,
        "operator.localKek.volume.csi.driver=secrets-store.csi.k8s.io",
        "operator.localKek.volume.csi.readOnly=true",
        "operator.localKek.volume.csi.volumeAttributes.secretProviderClass=regsandbox-kek",
        "operator.localKek.fileName=kek.b64",
    )
    env = _operator_env(docs)
    assert _operator_settings(env).local_kek_file == Path("/var/run/regsandbox/kek/kek.b64")
    pod = _pod(docs, "operator")
    [volume] = [v for v in pod["volumes"] if v["name"] == "local-kek"]
    assert volume == {"name": "local-kek", "csi": csi}
    [operator] = [c for c in pod["containers"] if c["name"] == "operator"]
    [mount] = [m for m in operator["volumeMounts"] if m["name"] == "local-kek"]
    assert mount == {
        "name": "local-kek",
        "mountPath": "/var/run/regsandbox/kek",
        "readOnly": True,
    }
    # Another provider has no KEK of this kind: nothing is mounted for it.
    hsm = _template(
        chart,
        "operator.keyProvider=pkcs11",
        "operator.pkcs11.tokenLabel=t",
        "operator.pkcs11.pinSecret=p",
        "operator.localKek.volume.secret.secretName=kek",
    )
    assert "REGSANDBOX_LOCAL_KEK_FILE" not in _operator_env(hsm)
    assert "fileName" in _refusal(chart, "operator.localKek.fileName=../kek")


def test_template_reads_the_previous_local_kek_from_the_same_volume(repo_root: Path) -> None:
    """During a KEK rotation with the KEK in files, the previous KEK is a second file in
    the mounted KEK volume (docs/key-custody.md, "Rotating keys")."""
    chart = repo_root / "charts/regsandbox"
    volume = "operator.localKek.volume.secret.secretName=regsandbox-kek-files"
    assert "REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE" not in _operator_env(_template(chart))
    docs = _template(chart, volume, "operator.localKek.previousFileName=kek-2026-11")
    env = _operator_env(docs)
    assert env["REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE"] == "/var/run/regsandbox/kek/kek-2026-11"
    [operator] = [c for c in _pod(docs, "operator")["containers"] if c["name"] == "operator"]
    [mount] = [m for m in operator["volumeMounts"] if m["name"] == "local-kek"]
    previous = Path(env["REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE"])
    assert previous.parent == Path(mount["mountPath"])  # inside the mounted KEK volume
    settings = _operator_settings(env)
    assert settings.local_previous_kek_file == previous
    assert settings.local_kek_file == Path("/var/run/regsandbox/kek/kek")
    # The chart's default names the file; an empty name turns it off.
    default = _operator_env(_template(chart, volume))
    assert default["REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE"] == "/var/run/regsandbox/kek/previous-kek"
    off = _operator_env(_template(chart, volume, "operator.localKek.previousFileName="))
    assert "REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE" not in off
    assert "REGSANDBOX_LOCAL_KEK_FILE" in off
    assert "previousFileName" in _refusal(
        chart, volume, "operator.localKek.previousFileName=../../pkcs11/pin"
    )


def test_template_with_an_opa_server_of_ones_own(repo_root: Path) -> None:
    chart = repo_root / "charts/regsandbox"
    docs = _template(chart, "operator.policyEngine=opa", "operator.opaUrl=http://opa.opa:8181")
    assert _operator_settings(_operator_env(docs)).opa_url == "http://opa.opa:8181"
    assert [c["name"] for c in _pod(docs, "operator")["containers"]] == ["operator"]


def test_template_with_the_export_outbox(repo_root: Path) -> None:
    chart = repo_root / "charts/regsandbox"
    docs = _template(
        chart,
        "operator.exportOutbox.enabled=true",
        "operator.exportOutbox.bucket=regsandbox-outbox",
        "operator.exportOutbox.endpoint=https://s3.lu-national-1.example.lu",
        "operator.exportOutbox.region=lu-national-1",
        "operator.exportOutbox.credentialsSecret=regsandbox-outbox-s3",
        "operator.exportOutbox.destinations.lux-bank-models-eu.region=aws:eu-central-1",
        "operator.exportOutbox.destinations.hospital-models.region=onprem:lu-national-1",
        "operator.exportOutbox.destinations.hospital-models.endpoint=https://s3.example.lu",
    )
    env = _operator_env(docs)
    outbox = OutboxSettings.model_validate_json(env["REGSANDBOX_EXPORT_OUTBOX"])
    assert outbox.bucket == "regsandbox-outbox"
    assert outbox.endpoint == "https://s3.lu-national-1.example.lu"
    assert outbox.region == "lu-national-1"
    assert outbox.destinations == {
        "lux-bank-models-eu": RegisteredDestination(region="aws:eu-central-1"),
        "hospital-models": RegisteredDestination(
            region="onprem:lu-national-1", endpoint="https://s3.example.lu"
        ),
    }
    # No secret in the JSON: the credentials come from the Secret, as boto3's variables.
    assert outbox.access_key_id is None
    assert outbox.secret_access_key is None
    assert _operator_settings(env).export_outbox == outbox
    operator = next(c for c in _pod(docs, "operator")["containers"] if c["name"] == "operator")
    from_secrets = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in operator["env"]
        if "secretKeyRef" in (e.get("valueFrom") or {})
    }
    assert from_secrets == {
        key: {"name": "regsandbox-outbox-s3", "key": key}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    }
    # Without a credentials Secret, the pod's own identity (IRSA, instance role).
    docs = _template(
        chart, "operator.exportOutbox.enabled=true", "operator.exportOutbox.bucket=outbox"
    )
    env = _operator_env(docs)
    assert OutboxSettings.model_validate_json(env["REGSANDBOX_EXPORT_OUTBOX"]).endpoint is None
    operator = next(c for c in _pod(docs, "operator")["containers"] if c["name"] == "operator")
    assert not [e for e in operator["env"] if e["name"].startswith("AWS_")]


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
