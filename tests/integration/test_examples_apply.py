"""Every manifest in examples/ is accepted by the real API server with the generated CRDs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sandbox.api.resources import RESOURCES
from sandbox.artifacts.admission import apply_admission_policies
from sandbox.kube.apply import apply
from sandbox.provision.rbac import MEMBER_CLUSTER_ROLE, cluster_roles
from sandbox.storage.admission import apply_claim_policies
from sandbox.testing import install_crds

pytestmark = pytest.mark.integration

# Kinds whose CRDs are not served yet (none today).
PENDING_KINDS: set[str] = set()


def _documents(repo_root: Path) -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((repo_root / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((str(path.relative_to(repo_root)), doc))
    return docs


def _as_member(
    admin_api: client.ApiClient, user_api: Callable[..., client.ApiClient], doc: dict[str, Any]
) -> client.ApiClient:
    user, ns = doc["spec"]["requestedBy"], doc["metadata"]["namespace"]
    apply(
        admin_api,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"example-{user}", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": MEMBER_CLUSTER_ROLE,
            },
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    api = user_api(user)
    custom = client.CustomObjectsApi(api)
    deadline = time.monotonic() + 10  # until the binding reaches the authorizer
    while time.monotonic() < deadline:
        try:
            custom.list_namespaced_custom_object("regsandbox.io", "v1alpha1", ns, "modelexports")
            break
        except client.ApiException as exc:
            if exc.status != 403:
                raise
            time.sleep(0.2)
    return api


def test_examples_exist_and_use_known_kinds(repo_root: Path) -> None:
    served = {r.kind for r in RESOURCES}
    docs = _documents(repo_root)
    assert len(docs) >= 15
    assert {d["kind"] for _, d in docs} <= served | PENDING_KINDS


def test_every_example_is_accepted_by_the_api_server(
    admin_api: client.ApiClient, repo_root: Path, user_api: Callable[..., client.ApiClient]
) -> None:
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")
    apply_admission_policies(admin_api)
    apply_claim_policies(admin_api)
    for role in cluster_roles():
        apply(admin_api, role)
    served = {r.kind for r in RESOURCES}
    namespaces = {
        d["metadata"]["namespace"]
        for _, d in _documents(repo_root)
        if d["metadata"].get("namespace")
    }
    for ns in namespaces:
        apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    checked = 0
    for origin, doc in _documents(repo_root):
        if doc["kind"] not in served:
            continue
        api = admin_api
        if doc["kind"] == "ModelExport":
            # Admission insists that the requester is the user who creates the export.
            api = _as_member(admin_api, user_api, doc)
        try:
            apply(api, doc, dry_run=True)
        except client.ApiException as exc:
            pytest.fail(f"{origin}: {doc['kind']} {doc['metadata']['name']} refused: {exc.body}")
        checked += 1
    assert checked >= 12
