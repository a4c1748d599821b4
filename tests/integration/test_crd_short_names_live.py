"""On a real API server, no other resource answers to a regsandbox short name."""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client

from sandbox.api.meta import API_GROUP
from sandbox.api.resources import RESOURCES
from sandbox.testing import install_crds

pytestmark = pytest.mark.integration


def test_discovery_lists_each_short_name_once(admin_api: client.ApiClient, repo_root: Path) -> None:
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")
    others: dict[str, str] = {}
    groups = client.ApisApi(admin_api).get_api_versions().groups
    versions = ["/api/v1"] + [f"/apis/{g.preferred_version.group_version}" for g in groups]
    for path in versions:
        found = admin_api.call_api(
            path, "GET", auth_settings=["BearerToken"], response_type="object"
        )[0]
        for res in found["resources"]:
            if "/" in res["name"] or path.startswith(f"/apis/{API_GROUP}/"):
                continue
            for name in [res["name"], res.get("singularName") or "", *res.get("shortNames", [])]:
                others[name] = f"{path} {res['kind']}"
    ours = {s: res.kind for res in RESOURCES for s in res.short_names}
    assert {s: others[s] for s in ours if s in others} == {}
    # The regsandbox resources are served, under their long names and short names.
    served = admin_api.call_api(
        f"/apis/{API_GROUP}/v1alpha1", "GET", auth_settings=["BearerToken"], response_type="object"
    )[0]
    shorts = {
        r["name"]: r.get("shortNames", []) for r in served["resources"] if "/" not in r["name"]
    }
    assert shorts == {res.plural: list(res.short_names) for res in RESOURCES}
