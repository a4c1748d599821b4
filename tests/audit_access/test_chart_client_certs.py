"""The chart's optional TLS listener for readers, with a client CA (rendered by the pinned helm)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from sandbox.devenv.toolchain import tool_path
from tests.audit_access.conftest import render_chart

TLS = ("audit.tls.enabled=true", "audit.tls.secretName=audit-tls")


def _audit(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The audit StatefulSet's pod spec and the audit Service."""
    pod = next(
        d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "rs-audit"
    )
    service = next(
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "rs-audit"
    )
    return pod["spec"]["template"]["spec"], service


def test_by_default_there_is_no_tls_listener(repo_root: Path) -> None:
    pod, service = _audit(render_chart(repo_root))
    args = pod["containers"][0]["args"]
    assert not [a for a in args if a.startswith(("--tls", "--client-ca"))]
    assert [p["port"] for p in service["spec"]["ports"]] == [8080, 8081]  # writers, readers


def test_the_client_ca_is_mounted_and_given_to_the_tls_listener(repo_root: Path) -> None:
    docs = render_chart(
        repo_root,
        *TLS,
        "audit.tls.clientCAConfigMap=cluster-client-ca",
        "audit.kubernetesReaders.enabled=true",
    )
    pod, service = _audit(docs)
    container = pod["containers"][0]
    args = container["args"]
    for arg in (
        "--kube-readers",
        "--tls-listen=0.0.0.0:8443",
        "--tls-cert=/tls/tls.crt",
        "--tls-key=/tls/tls.key",
        "--client-ca-file=/client-ca/ca.crt",
    ):
        assert arg in args
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "audit-tls"
    assert volumes["client-ca"]["configMap"]["name"] == "cluster-client-ca"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tls", "/client-ca"} <= mounts
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "http": 8080,
        "read": 8081,
        "https": 8443,  # served by the read server's process
    }


def _refused(repo_root: Path, *assignments: str) -> str:
    sets = [arg for a in assignments for arg in ("--set", a)]
    rendered = subprocess.run(
        [str(tool_path("helm")), "template", "rs", str(repo_root / "charts/regsandbox"), *sets],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode != 0
    return rendered.stderr


def test_bad_tls_values_fail_at_render_time(repo_root: Path) -> None:
    assert "secretName" in _refused(repo_root, "audit.tls.enabled=true")
    # Certificate users are authorised by RBAC: a client CA without Kubernetes readers
    # would otherwise fall back to open reads.
    err = _refused(repo_root, *TLS, "audit.tls.clientCAConfigMap=ca")
    assert "kubernetesReaders" in err
