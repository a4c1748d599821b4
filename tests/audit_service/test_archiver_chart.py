"""The chart's archive values: refused when half-configured, and what they render runs.

The rendered audit container's own arguments and credential variables are run as a
process against a real MinIO, so a chart that renders but configures nothing (or
something the service does not accept) fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.devenv.toolchain import tool_path

from .conftest import S3Server, free_port, wait_for
from .test_archiver import Deployment, Service, _events, _status, minio_client

pytestmark = pytest.mark.s3

CHART = "charts/regsandbox"
BASE = ("cluster.region=onprem:lu-1", "cluster.jurisdiction=LU")


def _helm(repo: Path, *assignments: str) -> subprocess.CompletedProcess[str]:
    args = [a for assignment in (*BASE, *assignments) for a in ("--set", assignment)]
    return subprocess.run(
        [str(tool_path("helm")), "template", "rs", str(repo / CHART), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _audit_container(repo: Path, *assignments: str) -> dict[str, Any]:
    rendered = _helm(repo, *assignments)
    assert rendered.returncode == 0, rendered.stderr
    for doc in yaml.safe_load_all(rendered.stdout):
        if doc and doc["kind"] == "StatefulSet" and doc["metadata"]["name"] == "rs-audit":
            container: dict[str, Any] = doc["spec"]["template"]["spec"]["containers"][0]
            return container
    raise AssertionError("no audit StatefulSet rendered")


def test_the_archive_is_off_by_default_and_refused_half_configured(repo_root: Path) -> None:
    container = _audit_container(repo_root)
    assert not [a for a in container["args"] if a.startswith("--archive")]
    assert "env" not in container or not any(e["name"].startswith("AWS_") for e in container["env"])
    for half in (
        ("audit.archive.enabled=true",),
        ("audit.archive.enabled=true", "audit.archive.bucket=audit-archive"),
        ("audit.archive.enabled=true", "audit.archive.retentionDays=30"),
        ("audit.archive.enabled=true", "audit.archive.bucket=a", "audit.archive.retentionDays=3"),
    ):
        refused = _helm(repo_root, *half)
        assert refused.returncode != 0, half
        assert "archive" in refused.stderr
    refused = _helm(repo_root, "audit.archive.accessKey=AKIA123")  # no such value
    assert refused.returncode != 0


def test_the_rendered_archive_configuration_archives(
    repo_root: Path, tmp_path: Path, minio: S3Server, event: Any
) -> None:
    d = Deployment(tmp_path, minio)
    container = _audit_container(
        repo_root,
        "audit.archive.enabled=true",
        f"audit.archive.bucket={d.bucket}",
        "audit.archive.prefix=prod/",
        f"audit.archive.endpoint={minio.endpoint}",
        "audit.archive.region=us-east-1",
        "audit.archive.retentionDays=1",
        "audit.archive.interval=1",
        "audit.archive.credentialsSecret=audit-archive-s3",
    )
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert {ref["name"] for ref in env.values()} == {"audit-archive-s3"}
    assert env["AWS_SESSION_TOKEN"].get("optional") is True
    secret = {"AWS_ACCESS_KEY_ID": minio.access_key, "AWS_SECRET_ACCESS_KEY": minio.secret_key}
    assert minio.secret_key not in yaml.safe_dump(container)

    port = free_port()
    local = {
        "--log=": f"--log={d.log}",
        "--key=": f"--key={d.key}",
        "--listen=": f"--listen=127.0.0.1:{port}",
    }
    # The chart's writers are Kubernetes identities and its anchor a ConfigMap: both need
    # the API server (tested with the chart elsewhere); here a writers token file stands in.
    args = [f"--writers={d.writers}"]
    for arg in container["args"][3:]:  # after "sandboxctl audit serve"
        if arg.startswith(("--anchor", "--kube-writer", "--audience")):
            continue
        args.append(next((v for k, v in local.items() if arg.startswith(k)), arg))
    assert container["args"][:3] == ["sandboxctl", "audit", "serve"]
    process_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        **{name: secret[ref["key"]] for name, ref in env.items() if ref["key"] in secret},
    }
    output = tmp_path / "serve.log"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", "audit", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=process_env,
        )
        service = Service(proc, f"http://127.0.0.1:{port}", output)
        try:
            wait_for(lambda: bool(_status(service.url)), "the service")
            service.append(d.signer, _events(event, 0, 12))
            service.archived(service.checkpointed(d.signer, 12))
        finally:
            service.stop()
    keys = set(d.versions(minio_client(minio)))
    assert "prod/checkpoints/00000000000000000012" in keys
    assert d.verify().returncode == 0
