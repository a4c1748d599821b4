"""Small helpers for the export tests."""

from __future__ import annotations

import hashlib
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.artifacts.outbox import outbox_prefix
from sandbox.devenv.minio import MinioServer
from sandbox.provision.names import sandbox_id
from sandbox.testing import sandbox_manifest

from .conftest import DEST_EU, OUTBOX, unique

GROUP, VERSION = "regsandbox.io", "v1alpha1"


def objects(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def create_sandbox(api: client.ApiClient, tenant: str, **spec: Any) -> str:
    name = unique("sbx")
    body = sandbox_manifest(name, tenant, **spec)
    objects(api).create_namespaced_custom_object(
        GROUP, VERSION, f"tenant-{tenant}", "sandboxes", body
    )
    return name


def put_artifact(minio: MinioServer, tenant: str, sandbox: str, path: str, data: bytes) -> str:
    """Write an artifact into the sandbox outbox (as the sandbox would); its sha256."""
    key = outbox_prefix(sandbox_id(tenant, sandbox)) + path
    minio.client().put_object(Bucket=OUTBOX, Key=key, Body=data)
    return hashlib.sha256(data).hexdigest()


def export_body(
    tenant: str,
    sandbox: str,
    requester: str,
    *,
    path: str = "model.onnx",
    type_: str = "model",
    bucket: str = DEST_EU,
    region: str = "aws:eu-central-1",
    key: str | None = None,
) -> dict[str, Any]:
    name = unique("exp")
    destination: dict[str, Any] = {"bucket": bucket, "region": region}
    if key:
        destination["key"] = key
    else:
        destination["prefix"] = f"{tenant}/{name}/"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelExport",
        "metadata": {"name": name, "namespace": f"tenant-{tenant}"},
        "spec": {
            "sandbox": sandbox,
            "artifact": {"path": path, "type": type_},
            "destination": destination,
            "justification": "model for the supervisory report",
            "requestedBy": requester,
        },
    }


def create(
    api: client.ApiClient, body: dict[str, Any], plural: str, dry_run: bool = False
) -> dict[str, Any]:
    ns = body["metadata"]["namespace"]
    kwargs = {"dry_run": "All"} if dry_run else {}
    return dict(
        objects(api).create_namespaced_custom_object(GROUP, VERSION, ns, plural, body, **kwargs)
    )


def review_body(
    ns: str,
    export: str,
    reviewer: str,
    decision: str = "approve",
    comment: str = "",
    groups: list[str] | None = None,
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ExportReview",
        "metadata": {"name": unique(f"{export}-{decision}"), "namespace": ns},
        "spec": {
            "export": export,
            "decision": decision,
            "reviewer": reviewer,
            "groups": groups or [],
            "comment": comment,
        },
    }


def get_export(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return dict(objects(api).get_namespaced_custom_object(GROUP, VERSION, ns, "modelexports", name))


def get_review(api: client.ApiClient, ns: str, name: str) -> dict[str, Any]:
    return dict(
        objects(api).get_namespaced_custom_object(GROUP, VERSION, ns, "exportreviews", name)
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def is_true(obj: dict[str, Any], type_: str) -> bool:
    cond = condition(obj, type_)
    return bool(cond and cond["status"] == "True")


def refused(call: Any) -> ApiException:
    """Run ``call`` and return the ApiException it must raise."""
    try:
        call()
    except ApiException as exc:
        return exc
    raise AssertionError("the API server accepted what it should refuse")


def sha_at(minio: MinioServer, bucket: str, key: str) -> str | None:
    s3 = minio.client()
    try:
        data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None
    return hashlib.sha256(data).hexdigest()
