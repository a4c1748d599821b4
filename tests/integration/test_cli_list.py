"""The plugin's list commands take kubectl's ``-A``, ``-l`` and ``--watch``.

Against the session's real API server: ModelExports in two namespaces, with labels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from typer.testing import CliRunner

from sandbox.cli import app
from sandbox.cli.export import whoami
from sandbox.devenv.controlplane import ControlPlane
from sandbox.kube.apply import apply
from sandbox.testing import install_crds

pytestmark = pytest.mark.integration

runner = CliRunner()


def _export(namespace: str, name: str, requester: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "sandbox": "study",
            "artifact": {"path": "model.onnx", "type": "model"},
            "destination": {"bucket": "eu-models", "region": "aws:eu-central-1", "prefix": "x/"},
            "justification": "model for the supervisory report",
            "requestedBy": requester,
        },
    }


@pytest.fixture(scope="module")
def two_namespaces(admin_api: client.ApiClient, repo_root: Path) -> tuple[str, str, str]:
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")
    requester = whoami(admin_api)[0]
    tag = uuid.uuid4().hex[:5]
    first, second = f"tenant-cli-a-{tag}", f"tenant-cli-b-{tag}"
    for ns in (first, second):
        apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    apply(admin_api, _export(first, "exp-risk", requester, team="risk", run=tag))
    apply(admin_api, _export(first, "exp-ops", requester, team="ops", run=tag))
    apply(admin_api, _export(second, "exp-risk-2", requester, team="risk", run=tag))
    return first, second, tag


def _list(plane: ControlPlane, *args: str) -> list[dict[str, Any]]:
    result = runner.invoke(
        app,
        ["export", "list", "--kubeconfig", str(plane.admin_kubeconfig), "-o", "json", *args],
    )
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def _names(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items]


def test_all_namespaces_and_a_label_selector(
    control_plane: ControlPlane, two_namespaces: tuple[str, str, str]
) -> None:
    first, second, tag = two_namespaces
    assert _names(_list(control_plane, "-n", first)) == [(first, "exp-ops"), (first, "exp-risk")]
    everywhere = _names(_list(control_plane, "-A", "-l", f"run={tag}"))
    assert everywhere == [(first, "exp-ops"), (first, "exp-risk"), (second, "exp-risk-2")]
    risk = _names(_list(control_plane, "--all-namespaces", "--selector", f"run={tag},team=risk"))
    assert risk == [(first, "exp-risk"), (second, "exp-risk-2")]
    assert _names(_list(control_plane, "-n", first, "-l", f"run={tag},team!=risk")) == [
        (first, "exp-ops")
    ]


def test_all_namespaces_table_has_a_namespace_column(
    control_plane: ControlPlane, two_namespaces: tuple[str, str, str]
) -> None:
    first, second, tag = two_namespaces
    result = runner.invoke(
        app,
        [
            "export",
            "list",
            "--kubeconfig",
            str(control_plane.admin_kubeconfig),
            "-A",
            "-l",
            f"run={tag}",
        ],
        env={"COLUMNS": "200"},  # a wide terminal: rich folds nothing
    )
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:2] == ["NAMESPACE", "NAME"]
    assert [r.split()[:2] for r in rows] == [
        [first, "exp-ops"],
        [first, "exp-risk"],
        [second, "exp-risk-2"],
    ]


def test_namespace_and_all_namespaces_together_is_a_usage_error(
    control_plane: ControlPlane,
) -> None:
    result = runner.invoke(
        app,
        ["export", "list", "--kubeconfig", str(control_plane.admin_kubeconfig), "-A", "-n", "x"],
    )
    assert result.exit_code == 2


def test_watch_prints_changes_after_the_listing(
    admin_api: client.ApiClient,
    control_plane: ControlPlane,
    two_namespaces: tuple[str, str, str],
) -> None:
    first, _, tag = two_namespaces
    command = [
        sys.executable,
        "-m",
        "sandbox.cli",
        "export",
        "list",
        "--kubeconfig",
        str(control_plane.admin_kubeconfig),
        "-n",
        first,
        "-l",
        f"run={tag}",
        "--watch",
        "-o",
        "name",
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(2)]
        assert lines == ["exp-ops", "exp-risk"]
        # The first listing is out; a new export now appears as it is created.
        apply(admin_api, _export(first, "exp-new", whoami(admin_api)[0], run=tag))
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline and "exp-new" not in seen:
            seen.append(proc.stdout.readline().strip())
        assert "exp-new" in seen
        assert proc.poll() is None  # still watching
    finally:
        proc.terminate()
        proc.wait(timeout=10)
