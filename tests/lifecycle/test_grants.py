"""Datasets are granted by policy per dataset, and revoked when they change or vanish."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get

from .helpers import condition, ready_sandbox, sandbox_body, unique

pytestmark = pytest.mark.integration


@pytest.fixture
def dataset_factory(admin_api: client.ApiClient) -> Iterator[Callable[..., str]]:
    made: list[str] = []

    def make(
        region: str = "onprem:lu-national-1", personal: str = "pseudonymised", **spec: Any
    ) -> str:
        name = unique("ds")
        apply(
            admin_api,
            {
                "apiVersion": "regsandbox.io/v1alpha1",
                "kind": "Dataset",
                "metadata": {"name": name},
                "spec": {
                    "sector": "finance",
                    "jurisdiction": "LU",
                    "location": {"bucket": "bank-data", "prefix": f"{name}/", "region": region},
                    "personalData": personal,
                    "allowedPurposes": ["fraud-detection"],
                    "retention": {"days": 1826},
                    # DORA: the bank's register entry and contracted data location.
                    "ictThirdParty": {"registerReference": "ROI-1", "dataLocations": ["LU"]},
                    **spec,
                },
            },
        )
        made.append(name)
        return name

    yield make
    for name in made:
        delete(admin_api, "Dataset", name)


def _grants(api: client.ApiClient, name: str, home: str) -> dict[str, dict[str, Any]]:
    obj = get(api, "Sandbox", name, home) or {}
    return {g["name"]: g for g in (obj.get("status") or {}).get("datasets") or []}


def _actions(entries: list[dict[str, Any]], sandbox: str) -> list[tuple[str, str]]:
    return [
        (e["action"], str(e["details"].get("dataset")))
        for e in entries
        if e["resource"].get("sandbox") == sandbox and e["action"].startswith("dataset.")
    ]


def test_grant_denial_shows_violation_codes_per_dataset(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    dataset_factory: Callable[..., str],
) -> None:
    tenant = tenant_factory()
    good = dataset_factory()
    abroad = dataset_factory(region="aws:us-east-1", personal="personal")
    home = f"tenant-{tenant}"
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, "the home namespace")
    name = unique("sbx")
    requests = [
        {"name": good, "purpose": "fraud-detection"},
        {"name": abroad, "purpose": "fraud-detection"},
    ]
    apply(admin_api, sandbox_body(name, tenant, datasets=requests))

    grants = operator.wait_until(
        lambda: (g := _grants(admin_api, name, home)) and len(g) == 2 and g, 60, "grant outcomes"
    )
    assert grants[good]["granted"] is True
    assert grants[abroad]["granted"] is False
    assert any(code.startswith("RESIDENCY") for code in grants[abroad]["violations"])
    obj = get(admin_api, "Sandbox", name, home)
    assert condition(obj, "DatasetsGranted")["status"] == "False"  # type: ignore[index]
    assert abroad in condition(obj, "DatasetsGranted")["message"]  # type: ignore[index]
    delete(admin_api, "Sandbox", name, home)


def test_grant_is_revoked_when_the_dataset_changes_or_disappears(
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    tenant_factory: Callable[..., str],
    dataset_factory: Callable[..., str],
    audit_actions: Callable[[], list[dict[str, Any]]],
) -> None:
    tenant = tenant_factory()
    first, second = dataset_factory(), dataset_factory()
    requests = [{"name": n, "purpose": "fraud-detection"} for n in (first, second)]
    name, _ = ready_sandbox(admin_api, operator, tenant, datasets=requests)
    home = f"tenant-{tenant}"
    assert {g["granted"] for g in _grants(admin_api, name, home).values()} == {True}

    # The data steward narrows the purposes of the first dataset: its grant goes.
    client.CustomObjectsApi(admin_api).patch_cluster_custom_object(
        "regsandbox.io", "v1alpha1", "datasets", first, {"spec": {"allowedPurposes": ["research"]}}
    )
    operator.wait_until(
        lambda: _grants(admin_api, name, home)[first]["granted"] is False, 30, "the revocation"
    )
    # The second dataset is deleted: its grant goes too.
    delete(admin_api, "Dataset", second)
    revoked = operator.wait_until(
        lambda: _grants(admin_api, name, home)[second]["violations"] == ["DATASET_NOT_REGISTERED"],
        30,
        "the revocation of a deleted dataset",
    )
    assert revoked
    entries = operator.wait_until(
        lambda: (a := _actions(audit_actions(), name)) and ("dataset.revoked", second) in a and a,
        15,
        "the audit entries",
    )
    assert ("dataset.granted", first) in entries
    assert ("dataset.revoked", first) in entries
    delete(admin_api, "Sandbox", name, home)
