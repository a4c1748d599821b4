"""An export's anonymity claim, through the real operator: what lets a model trained on
special-category data leave the EEA, refused when it names no assessment."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.minio import MinioServer
from sandbox.kube.apply import apply, delete

from .conftest import DEST_US, ExportOperator, home_ready, wait_until
from .helpers import condition, create, create_sandbox, export_body, get_export, put_artifact

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def test_a_model_of_health_data_leaves_the_eea_only_claimed_anonymous(
    export_operator: ExportOperator,
    admin_api: client.ApiClient,
    user_api: Any,
    tenant: Any,
    minio: MinioServer,
) -> None:
    t = tenant("health", [{"user": "alice", "role": "member"}, {"user": "bob", "role": "reviewer"}])
    ns = home_ready(admin_api, t, export_operator)
    alice = user_api("alice")
    dataset = f"icu-{t}"
    apply(
        admin_api,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": dataset},
            "spec": {
                "location": {"bucket": "hospital-data", "region": "onprem:lu-national-1"},
                "sector": "health",
                "jurisdiction": "LU",
                "identifiability": "pseudonymised",
                "category": "special-category",
                "allowedPurposes": ["sepsis-model"],
            },
        },
    )
    try:
        sbx = create_sandbox(
            alice,
            t,
            purpose="sepsis-model",
            datasets=[{"name": dataset, "purpose": "sepsis-model"}],
        )
        put_artifact(minio, t, sbx, "model.onnx", b"weights")

        def decided(body: dict[str, Any]) -> dict[str, Any]:
            create(alice, body, "modelexports")
            name = body["metadata"]["name"]

            def done() -> dict[str, Any] | None:
                obj = get_export(alice, ns, name)
                return obj if (obj.get("status") or {}).get("policy") else None

            found: dict[str, Any] = wait_until(done, 30, f"the decision on {name}", export_operator)
            return found

        def codes(obj: dict[str, Any]) -> list[str]:
            return [v["code"] for v in obj["status"]["policy"]["violations"]]

        # Pseudonymised health data is special-category: its model stays in the EEA ...
        plain = decided(export_body(t, sbx, "alice", bucket=DEST_US, region="aws:us-east-1"))
        assert "RESIDENCY_EXPORT_OUTSIDE_EEA" in codes(plain)
        assert condition(plain, "Rejected")["reason"] == "PolicyDenied"  # type: ignore[index]
        # ... unless the export claims it is anonymous and names the assessment, which
        # then goes to the reviewers like any export.
        body = export_body(t, sbx, "alice", bucket=DEST_US, region="aws:us-east-1")
        body["spec"]["anonymity"] = {"assessmentReference": "ANON-2026-04"}
        claimed = decided(body)
        assert claimed["status"]["policy"]["allowed"] is True, codes(claimed)
        assert claimed["spec"]["anonymity"]["assessmentReference"] == "ANON-2026-04"
        # A claim that names nothing is refused, not ignored.
        blank = export_body(t, sbx, "alice", bucket=DEST_US, region="aws:us-east-1")
        blank["spec"]["anonymity"] = {"assessmentReference": "   "}
        assert "EXPORT_ANONYMITY_ASSESSMENT_MISSING" in codes(decided(blank))
    finally:
        delete(admin_api, "Dataset", dataset)
