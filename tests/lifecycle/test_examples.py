"""The examples/ manifests, run through the operator: compliant ones become Ready, violating
ones are refused with nothing provisioned."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.kube.apply import apply, delete, get

from .helpers import condition, unique

pytestmark = pytest.mark.integration

# sector: tenant name, compliant sandbox file, a code the violating sandbox must get,
# the violating tenant variant's file and the code the compliant request then gets
# (None, None for a sector whose tenant needs no attestation, such as research).
SECTORS: dict[str, tuple[str, str, str, str | None, str | None]] = {
    "finance": (
        "lux-bank",
        "sandbox-fraud-model.yaml",
        "FINANCE_EGRESS_OUTSIDE_EEA",
        "tenant-unattested.yaml",
        "FINANCE_SUPERVISOR_ATTESTATION_MISSING",
    ),
    "health": (
        "lux-hospital",
        "sandbox-sepsis-model.yaml",
        "HEALTH_PERMIT_PURPOSE_NOT_COVERED",
        "tenant-no-permit.yaml",
        "HEALTH_DATA_NOT_PSEUDONYMISED",
    ),
    "public": (
        "lux-ministry",
        "sandbox-claim-triage.yaml",
        "PUBLIC_ANONYMISATION_JUSTIFICATION_MISSING",
        "tenant-no-dpia.yaml",
        "PUBLIC_DPIA_MISSING",
    ),
    "research": (
        "lux-institute",
        "sandbox-mobility-model.yaml",
        "RESIDENCY_DATASET_OUTSIDE_EEA",
        None,
        None,
    ),
}


def _load(path: Path, tenant: str, renamed: str) -> list[dict[str, Any]]:
    """The file's objects, with the tenant (and the names built on it) renamed."""
    return [d for d in yaml.safe_load_all(path.read_text().replace(tenant, renamed)) if d]


@pytest.fixture
def cleanup(admin_api: client.ApiClient) -> Iterator[list[dict[str, Any]]]:
    made: list[dict[str, Any]] = []
    yield made
    for obj in reversed(made):
        meta = obj["metadata"]
        delete(admin_api, obj["kind"], meta["name"], meta.get("namespace"))


def _state(admin_api: client.ApiClient, sandbox: dict[str, Any]) -> Callable[[], str | None]:
    def check() -> str | None:
        meta = sandbox["metadata"]
        obj = get(admin_api, "Sandbox", meta["name"], meta["namespace"])
        ready, compliant = condition(obj, "Ready"), condition(obj, "PolicyCompliant")
        if ready and ready["status"] == "True":
            return "ready"
        if compliant and compliant["status"] == "False":
            return "denied: " + compliant["message"]
        return None

    return check


@pytest.mark.parametrize("sector", sorted(SECTORS))
def test_a_sectors_examples_are_decided_as_their_comments_say(
    sector: str,
    admin_api: client.ApiClient,
    operator: OperatorProcess,
    repo_root: Path,
    cleanup: list[dict[str, Any]],
) -> None:
    tenant, compliant_file, sandbox_code, violating_tenant_file, tenant_code = SECTORS[sector]
    renamed = f"{tenant}-{unique('x')[2:]}"
    folder = repo_root / "examples" / sector
    home = f"tenant-{renamed}"

    def apply_file(name: str) -> list[dict[str, Any]]:
        docs = _load(folder / name, tenant, renamed)
        for doc in docs:
            apply(admin_api, doc)
            if doc not in cleanup:
                cleanup.append(doc)
        return docs

    apply_file("tenant.yaml")
    apply_file("datasets.yaml")
    operator.wait_until(lambda: get(admin_api, "Namespace", home), 30, f"namespace {home}")

    (compliant,) = apply_file(compliant_file)
    state = operator.wait_until(_state(admin_api, compliant), 60, "the compliant example")
    assert state == "ready", state
    (violating,) = apply_file("sandbox-violating.yaml")
    state = operator.wait_until(_state(admin_api, violating), 60, "the violating example")
    assert state.startswith("denied: "), state
    assert sandbox_code in state
    assert get(admin_api, "Namespace", f"sbx-{renamed}-{violating['metadata']['name']}") is None

    # The tenant variant that lacks what its sector requires: the same compliant request,
    # under a new name, is refused.
    if violating_tenant_file is None or tenant_code is None:
        return
    apply_file(violating_tenant_file)
    again = {**compliant, "metadata": {**compliant["metadata"], "name": "again"}}
    apply(admin_api, again)
    cleanup.append(again)
    state = operator.wait_until(_state(admin_api, again), 60, "the request of the variant tenant")
    assert state.startswith("denied: "), state
    assert tenant_code in state
    assert get(admin_api, "Namespace", f"sbx-{renamed}-again") is None
