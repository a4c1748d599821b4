"""The checkpoint anchor in a ConfigMap, on the real API server, as the chart sets it up.

The ConfigMap, Role, RoleBinding and ServiceAccount are the chart's own, rendered by helm.

The audit service's ServiceAccount may get and update that one ConfigMap (a Role with
``resourceNames``); nobody else (a tenant, the workload, a volume writer) may move it,
and the API server's resourceVersion makes every update a compare-and-swap.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from audit.errors import AnchorConflictError, AnchorMismatchError, StorageError
from audit.log import AuditLog
from audit.note import Signer
from audit.proof import TlogProof
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.toolchain import tool_path
from sandbox.kube.audit_anchor import DATA_KEY, ConfigMapCheckpointAnchor
from sandbox.testing import api_client
from tests.audit.helpers import ORIGIN, event, forge_after

pytestmark = pytest.mark.integration

ANCHOR = "rs-audit-anchor"
SA = "regsandbox-audit"
BASE = ("cluster.region=onprem:lu-1", "cluster.jurisdiction=LU")


def _render(repo: Path, namespace: str, *assignments: str) -> list[dict[str, Any]]:
    sets = [a for x in (*BASE, *assignments) for a in ("--set", x)]
    helm = [str(tool_path("helm")), "template", "rs", str(repo / "charts/regsandbox")]
    rendered = subprocess.run(
        [*helm, "--namespace", namespace, *sets],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def _anchor_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wanted = {
        ("ServiceAccount", SA),
        ("ConfigMap", ANCHOR),
        ("Role", "regsandbox-audit-anchor"),
        ("RoleBinding", "regsandbox-audit-anchor"),
    }
    return [d for d in docs if (d["kind"], d["metadata"]["name"]) in wanted]


@pytest.fixture
def namespace(admin_api: client.ApiClient, repo_root: Path) -> Iterator[str]:
    """A namespace holding the chart's own anchor objects (rendered by helm, applied)."""
    name = f"audit-anchor-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(admin_api)
    rbac = client.RbacAuthorizationV1Api(admin_api)
    core.create_namespace({"metadata": {"name": name}})
    objects = _anchor_objects(_render(repo_root, name))
    assert sorted(d["kind"] for d in objects) == [
        "ConfigMap",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    create = {
        "ServiceAccount": core.create_namespaced_service_account,
        "ConfigMap": core.create_namespaced_config_map,
        "Role": rbac.create_namespaced_role,
        "RoleBinding": rbac.create_namespaced_role_binding,
    }
    for doc in objects:
        create[doc["kind"]](name, doc)
    core.create_namespaced_config_map(name, {"metadata": {"name": "something-else"}})
    yield name
    core.delete_namespace(name)


def test_the_chart_wires_the_anchor_by_default_and_drops_it_when_disabled(
    repo_root: Path,
) -> None:
    docs = _render(repo_root, "regsandbox-system")
    [sts] = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "rs-audit"]
    pod = sts["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is True
    assert "--anchor-configmap=regsandbox-system/rs-audit-anchor" in pod["containers"][0]["args"]
    [cm] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == ANCHOR]
    assert "data" not in cm  # an upgrade never resets what the service stored
    assert cm["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    [role] = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("anchor")]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [ANCHOR],
            "verbs": ["get", "update"],
        }
    ]
    off = _render(repo_root, "regsandbox-system", "audit.anchor.enabled=false")
    assert _anchor_objects(off) == [
        d for d in _anchor_objects(off) if d["kind"] == "ServiceAccount"
    ]
    [sts] = [d for d in off if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "rs-audit"]
    # Still mounted without the anchor: the service checks writers' tokens (TokenReview).
    assert sts["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert not [
        a for a in sts["spec"]["template"]["spec"]["containers"][0]["args"] if "anchor" in a
    ]


def _as_service_account(plane: ControlPlane, namespace: str, sa: str = SA) -> client.ApiClient:
    """An ApiClient impersonating ServiceAccount ``namespace/sa`` (as its token would)."""
    api = api_client(plane.admin_kubeconfig)
    api.set_default_header("Impersonate-User", f"system:serviceaccount:{namespace}:{sa}")
    api.set_default_header("Impersonate-Group", "system:serviceaccounts")
    return api


def test_the_audit_service_account_keeps_the_anchor_and_refuses_a_forgery(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    anchor = ConfigMapCheckpointAnchor(
        _as_service_account(control_plane, namespace), namespace, ANCHOR
    )
    assert anchor.load().note is None
    signer = Signer.generate(ORIGIN)
    log_dir = tmp_path / "log"
    with AuditLog.create(log_dir, ORIGIN, signer, anchor=anchor) as log:
        log.append_batch([event(i) for i in range(10)])
        log.publish_checkpoint()
        old = TlogProof.parse(log.receipt(2).to_bytes()).checkpoint
        log.append_batch([event(i) for i in range(10, 20)])
        last = log.publish_checkpoint()
    stored = anchor.load()
    assert stored.note == last

    forge_after(log_dir, 10, old)
    with pytest.raises(AnchorMismatchError) as info:
        AuditLog(log_dir, signer, anchor=anchor)
    assert info.value.reason == "CheckpointAnchorMismatch"
    assert f"ConfigMap {namespace}/{ANCHOR}" in str(info.value)
    assert anchor.load() == stored  # unchanged: nothing signed, nothing anchored


def test_updates_are_compare_and_swap_on_resource_version(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = _as_service_account(control_plane, namespace)
    first = ConfigMapCheckpointAnchor(api, namespace, ANCHOR)
    second = ConfigMapCheckpointAnchor(api, namespace, ANCHOR)
    seen = first.load()
    first.swap(seen.version, b"one\n")
    with pytest.raises(AnchorConflictError, match="changed since resourceVersion"):
        second.swap(seen.version, b"two\n")
    assert first.load().note == b"one\n"


def test_nobody_else_may_update_the_anchor(
    control_plane: ControlPlane,
    namespace: str,
    admin_api: client.ApiClient,
    user_api: object,
) -> None:
    owner = ConfigMapCheckpointAnchor(
        _as_service_account(control_plane, namespace), namespace, ANCHOR
    )
    kept = owner.swap(owner.load().version, b"kept\n")

    # A client-certificate user (a tenant member, say) cannot read or update it.
    mallory = ConfigMapCheckpointAnchor(
        user_api("mallory", "tenant-a:members"),  # type: ignore[operator]
        namespace,
        ANCHOR,
    )
    with pytest.raises(StorageError, match="403"):
        mallory.load()
    # Another ServiceAccount of the namespace (a workload's) cannot either.
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "workload"}})
    workload_api = _as_service_account(control_plane, namespace, "workload")
    workload = ConfigMapCheckpointAnchor(workload_api, namespace, ANCHOR)
    with pytest.raises(StorageError, match="403"):
        workload.swap(kept.version, b"forged\n")
    # The audit ServiceAccount itself may touch no other ConfigMap, nor delete its own.
    with pytest.raises(StorageError, match="403"):
        ConfigMapCheckpointAnchor(
            _as_service_account(control_plane, namespace), namespace, "something-else"
        ).load()
    sa_core = client.CoreV1Api(_as_service_account(control_plane, namespace))
    with pytest.raises(client.ApiException) as denied:
        sa_core.delete_namespaced_config_map(ANCHOR, namespace)
    assert denied.value.status == 403
    cm = core.read_namespaced_config_map(ANCHOR, namespace)
    assert cm.data == {DATA_KEY: "kept\n"}


def _token_kubeconfig(plane: ControlPlane, namespace: str, path: Path) -> Path:
    """A kubeconfig carrying a real token of the audit ServiceAccount (TokenRequest)."""
    admin = yaml.safe_load(plane.admin_kubeconfig.read_text())
    core = client.CoreV1Api(api_client(plane.admin_kubeconfig))
    token = core.create_namespaced_service_account_token(
        SA, namespace, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    cluster = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": "audit", "user": {"token": token}}],
                "contexts": [
                    {"name": "audit", "context": {"cluster": cluster["name"], "user": "audit"}}
                ],
                "current-context": "audit",
            }
        )
    )
    return path


def test_sandboxctl_serve_keeps_its_anchor_in_the_configmap_and_refuses_a_forgery(
    control_plane: ControlPlane, namespace: str, admin_api: client.ApiClient, tmp_path: Path
) -> None:
    from audit.client import AuditClient
    from audit.service import token_digest
    from audit.signing import generate_key_file

    from .conftest import free_port, make_event
    from .test_cli import running

    kubeconfig = _token_kubeconfig(control_plane, namespace, tmp_path / "audit.kubeconfig")
    key = tmp_path / "log.key"
    signer = generate_key_file(key, ORIGIN)
    log_dir = tmp_path / "log"
    AuditLog.create(log_dir, ORIGIN, signer).close()
    writers = tmp_path / "writers"
    writers.write_text(f"{token_digest('anchor-token-0123456789')} operator\n")

    def args(port: int) -> list[str]:
        return [
            "serve",
            *("--log", str(log_dir), "--writers", str(writers), "--key", str(key)),
            *("--listen", f"127.0.0.1:{port}", "--kubeconfig", str(kubeconfig)),
            *("--anchor-configmap", f"{namespace}/{ANCHOR}"),
        ]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "first").mkdir()
    with (
        running(args(port), f"{url}/healthz", tmp_path / "first"),
        AuditClient(url, "anchor-token-0123456789", verifiers=[signer.verifier]) as c,
    ):
        c.append([make_event(i) for i in range(6)])
        receipt = c.prove(2)
        c.append([make_event(i) for i in range(6, 12)])
        c.prove(11)
    core = client.CoreV1Api(admin_api)
    anchored = core.read_namespaced_config_map(ANCHOR, namespace).data[DATA_KEY]
    assert anchored.split("\n")[1] == "12"

    forge_after(log_dir, 6, TlogProof.parse(receipt).checkpoint)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "second").mkdir()
    with running(args(port), f"{url}/healthz", tmp_path / "second"):
        health = httpx.get(f"{url}/healthz")
        assert health.status_code == 503
        reasons = {c["type"]: c["reason"] for c in health.json()["conditions"]}
        assert reasons["AnchorConsistent"] == "CheckpointAnchorMismatch"
    assert core.read_namespaced_config_map(ANCHOR, namespace).data[DATA_KEY] == anchored
