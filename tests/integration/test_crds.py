"""The generated CRDs are accepted by the real API server and validate objects."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.api import API_GROUP, API_VERSION
from sandbox.testing import install_crds

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def crds_installed(admin_api: client.ApiClient, repo_root: Path) -> None:
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")


def _sandbox(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "Sandbox",
        "metadata": {"name": f"s-{uuid.uuid4().hex[:6]}"},
        "spec": spec,
    }


def _create(admin_api: client.ApiClient, body: dict[str, Any]) -> dict[str, Any]:
    ns = "default"
    custom = client.CustomObjectsApi(admin_api)
    for _ in range(50):
        try:
            return dict(
                custom.create_namespaced_custom_object(
                    API_GROUP, API_VERSION, ns, "sandboxes", body
                )
            )
        except ApiException as exc:
            if exc.status != 404:  # the endpoint appears shortly after Established
                raise
            time.sleep(0.2)
    raise AssertionError("sandboxes endpoint never served")


@pytest.mark.usefixtures("crds_installed")
def test_valid_sandbox_is_accepted_with_defaults(admin_api: client.ApiClient) -> None:
    created = _create(
        admin_api,
        _sandbox({"purpose": "fraud", "region": "lu-national-1", "lifetime": {"ttl": "7d"}}),
    )
    assert created["spec"]["resources"]["cpu"] == "4"


@pytest.mark.usefixtures("crds_installed")
@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"purpose": "x", "region": "r", "lifetime": {"ttl": "1d"}, "resources": {"cpu": -2}},
            "spec.resources.cpu",
        ),
        (
            {
                "purpose": "x",
                "region": "r",
                "lifetime": {"ttl": "1d"},
                "resources": {"memory": "-1Gi"},
            },
            "spec.resources.memory",
        ),
        ({"purpose": "x", "region": "r", "lifetime": {}}, "exactly one of lifetime.ttl"),
        ({"purpose": "x", "region": "r", "lifetime": {"ttl": "soon"}}, "spec.lifetime.ttl"),
        ({"region": "r", "lifetime": {"ttl": "1d"}}, "spec.purpose"),
    ],
)
def test_invalid_sandbox_is_rejected_by_schema(
    admin_api: client.ApiClient, spec: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ApiException) as rejected:
        _create(admin_api, _sandbox(spec))
    assert rejected.value.status == 422
    assert expected in rejected.value.body
