"""The API server itself refuses a sandbox claim on any class but the sandbox's encrypted one."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.kube.admission import CHART_LABELS, load_chart_file
from sandbox.kube.apply import create
from sandbox.provision.names import LABEL_SANDBOX
from sandbox.storage.admission import (
    CHART_FILE,
    apply_claim_policies,
    claim_policies,
    render,
)
from sandbox.storage.profiles import storage_class_name, workspace_pvc


def test_chart_file_is_in_step_with_the_python(repo_root: Path) -> None:
    text = (repo_root / CHART_FILE).read_text()
    assert text == render(), "regenerate: python -m sandbox.storage.admission"
    # Exactly these objects, each labelled with the chart's standard labels.
    assert load_chart_file(text) == claim_policies()
    assert text.count(CHART_LABELS) == len(claim_policies())


def test_the_policy_fails_closed_and_exempts_no_one() -> None:
    policy, binding = claim_policies()
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert "matchConditions" not in policy["spec"]
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }


def _namespace(api: client.ApiClient, labels: dict[str, str]) -> str:
    name = f"claims-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
    )
    return name


def _claim(ns: str, name: str, storage_class: str | None) -> dict[str, Any]:
    claim = workspace_pvc(ns, ns, "1Gi", storage_class or "unused")
    claim["metadata"]["name"] = name
    if storage_class is None:
        del claim["spec"]["storageClassName"]
    return claim


def _refusal(api: client.ApiClient, claim: dict[str, Any]) -> ApiException | None:
    try:
        create(api, claim)
    except ApiException as exc:
        return exc
    return None


@pytest.mark.integration
def test_a_sandbox_claim_must_name_the_sandbox_class(admin_api: client.ApiClient) -> None:
    apply_claim_policies(admin_api)
    ns = _namespace(admin_api, {LABEL_SANDBOX: "s"})
    # A new policy takes a moment to reach the API server's admission chain.
    deadline = time.monotonic() + 30
    while _refusal(admin_api, _claim(ns, f"probe-{uuid.uuid4().hex[:4]}", "standard")) is None:
        assert time.monotonic() < deadline, "the claim policy never became active"
        time.sleep(0.2)

    for name, storage_class in (
        ("plain", "standard"),
        ("other-sandbox", storage_class_name("sbx-other-x")),
        ("default", None),  # the cluster default may be unencrypted
    ):
        refused = _refusal(admin_api, _claim(ns, name, storage_class))
        assert refused is not None, name
        assert refused.status == 403
        assert f"must name its encrypted StorageClass regsandbox-{ns}" in str(refused.body)

    assert _refusal(admin_api, _claim(ns, "workspace", storage_class_name(ns))) is None
    elsewhere = _namespace(admin_api, {})
    assert _refusal(admin_api, _claim(elsewhere, "anything", "standard")) is None
