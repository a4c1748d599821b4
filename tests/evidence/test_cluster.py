"""Isolation objects read from the real API server go into the pack and are assessed.

The namespace objects are the ones the operator applies (``isolation_objects`` from the
example tenant and sandbox); a namespace whose default-deny policy was removed is
reported as breaking AI Act Art. 59(1)(d) with its cluster snapshot as the item.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from typer.testing import CliRunner

from audit.signing import generate_key_file
from sandbox.api.sandbox import SandboxSpec
from sandbox.api.tenant import TenantSpec
from sandbox.cli import app
from sandbox.devenv.controlplane import ControlPlane
from sandbox.kube.apply import apply, delete
from sandbox.provision.names import sandbox_namespace
from sandbox.provision.sandbox_plan import effective_quota, isolation_objects
from tests.evidence.history import History, compliant, write_log

REPO = Path(__file__).resolve().parents[2]
TENANT = "evpack-lux"


def _objects(sandbox: str) -> list[dict[str, Any]]:
    tenant = yaml.safe_load((REPO / "examples/finance/tenant.yaml").read_text())
    box = yaml.safe_load((REPO / "examples/finance/sandbox-fraud-model.yaml").read_text())
    tenant_spec = TenantSpec.model_validate(tenant["spec"])
    spec = SandboxSpec.model_validate(box["spec"])
    quota = effective_quota(spec, tenant_spec.quota)
    wanted = ("Namespace", "NetworkPolicy", "ResourceQuota")
    return [
        o
        for o in isolation_objects(sandbox, TENANT, tenant_spec, spec, quota, spec.egress)
        if o["kind"] in wanted
    ]


def _pack(tmp_path: Path, kubeconfig: Path, sandbox: str) -> tuple[Path, dict[str, Any]]:
    history = History()
    compliant(history, TENANT, sandbox, "lux-bank-transactions")
    # still running: drop the expiry so the namespace is expected to exist
    history.events = [e for e in history.events if e.action not in ("sandbox.expired",)]
    written = write_log(tmp_path / "log", history.events)
    key = tmp_path / "officer.key"
    signer = generate_key_file(key, "evidence.regsandbox.test/officer")
    vkey = tmp_path / "officer.vkey"
    vkey.write_text(signer.verifier.vkey + "\n")
    pack = tmp_path / "pack"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "evidence",
            "pack",
            "--log",
            str(written.path),
            "--sandbox",
            f"{TENANT}/{sandbox}",
            "-o",
            str(pack),
            "--key",
            str(key),
            "--kubeconfig",
            str(kubeconfig),
        ],
    )
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(
        app,
        [
            "evidence",
            "verify",
            str(pack),
            "--vkey",
            str(vkey),
            "--vkey",
            str(written.vkey),
            "-o",
            "json",
        ],
    )
    assert result.exit_code == 0, result.stdout
    return pack, json.loads(result.stdout)


def test_isolation_objects_are_recorded_and_assessed(
    tmp_path: Path, control_plane: ControlPlane, admin_api: client.ApiClient
) -> None:
    sandbox = "fraud-model"
    ns = sandbox_namespace(TENANT, sandbox)
    try:
        for obj in _objects(sandbox):
            apply(admin_api, obj)
        _check(tmp_path, control_plane, admin_api, sandbox, ns)
    finally:
        delete(admin_api, "Namespace", ns, propagation="Background")


def _check(
    tmp_path: Path,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    sandbox: str,
    ns: str,
) -> None:
    pack, report = _pack(tmp_path / "ok", control_plane.admin_kubeconfig, sandbox)
    snapshot = json.loads((pack / "cluster" / f"{ns}.json").read_bytes())
    assert snapshot["namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )
    assert {p["metadata"]["name"] for p in snapshot["networkPolicies"]} >= {"default-deny"}
    assert [q["metadata"]["name"] for q in snapshot["resourceQuotas"]] == ["sandbox"]
    assert "managedFields" not in snapshot["namespace"]["metadata"]
    isolation = next(f for f in report["findings"] if f["control"] == "aia-59-1-d")
    assert isolation["status"] == "satisfied"
    assert f"cluster-{ns}" in isolation["supporting"]

    delete(admin_api, "NetworkPolicy", "default-deny", ns)
    _, report = _pack(tmp_path / "broken", control_plane.admin_kubeconfig, sandbox)
    isolation = next(f for f in report["findings"] if f["control"] == "aia-59-1-d")
    assert isolation["status"] == "not-satisfied"
    assert isolation["violations"] == [
        {
            "item": f"cluster-{ns}",
            "why": f"namespace {ns}: no NetworkPolicy selecting every pod for ingress and egress",
        }
    ]
