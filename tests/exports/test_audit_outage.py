"""The real audit service goes down under a running operator while an export is released.

The operator (``sandbox-operator run`` under the chart's ServiceAccount) appends to a
real ``sandboxctl audit serve`` over HTTP, as the chart deploys them. Two outages:

- the service is killed before the last approval: the approval cannot be logged, so
  nothing is released and the export says ``AuditLogUnavailable``;
- the service is killed at the worst moment, after the operator logged its intent and
  copied the artifact but before the ``released`` record (a proxy kills it when that
  append arrives): the copy is taken back, nothing stays released unlogged.

In both, once the service is back the export completes, with the release on record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.minio import MinioServer
from sandbox.devenv.operator_process import OperatorProcess, service_account_kubeconfig
from tests.real_audit import KillOnAppend, RealAuditService

from .conftest import DEST_EU, SYSTEM_NS, ExportOperator, home_ready, wait_until
from .helpers import (
    condition,
    create,
    create_sandbox,
    export_body,
    get_export,
    is_true,
    put_artifact,
    review_body,
    sha_at,
)

pytestmark = [pytest.mark.integration, pytest.mark.s3]


@pytest.fixture(scope="module")
def audited_operator(
    export_operator: ExportOperator,
    admin_api: client.ApiClient,
    control_plane: ControlPlane,
    outbox_settings: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[OperatorProcess, RealAuditService, KillOnAppend]]:
    """An export operator logging to a real audit service through a kill-on-cue proxy.

    The package's operator is stopped meanwhile (two operators must never act on the
    same objects) and started again afterwards.
    """
    tmp_path = tmp_path_factory.mktemp("exports-outage")
    service = RealAuditService(
        tmp_path / "audit",
        "audit.regsandbox.test/exports-outage",
        f"system:serviceaccount:{SYSTEM_NS}:regsandbox-operator",
    ).start()
    kubeconfig = service_account_kubeconfig(
        admin_api, SYSTEM_NS, control_plane.directory / "users" / "outage-operator.kubeconfig"
    )
    export_operator.stop()
    try:
        with KillOnAppend(service) as proxy:
            env = {
                "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
                "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
                "REGSANDBOX_NAMESPACE": SYSTEM_NS,
                "REGSANDBOX_AUDIT_URL": proxy.url,
                "REGSANDBOX_AUDIT_TOKEN_FILE": str(service.token_file),
                "REGSANDBOX_METRICS_PORT": "0",
                "REGSANDBOX_EXPORT_OUTBOX": json.dumps(outbox_settings),
                "REGSANDBOX_EXPORT_RESYNC_SECONDS": "0.5",
            }
            proc = OperatorProcess(kubeconfig, env, tmp_path / "operator.log").start()
            try:
                yield proc, service, proxy
            finally:
                proc.stop()
    finally:
        service.stop()
        export_operator.start()


def _members() -> list[dict[str, str]]:
    return [{"user": "alice", "role": "member"}, {"user": "bob", "role": "reviewer"}]


def _export(
    admin_api: client.ApiClient,
    user_api: Callable[..., client.ApiClient],
    minio: MinioServer,
    op: OperatorProcess,
    t: str,
    ns: str,
) -> tuple[str, str, str]:
    """A sandbox with an artifact and an export of it in review; (name, key, digest)."""
    alice = user_api("alice")
    sbx = create_sandbox(alice, t)
    digest = put_artifact(minio, t, sbx, "model.onnx", f"weights of {sbx}".encode() * 512)
    key = f"{t}/{sbx}/model.onnx"
    body = export_body(t, sbx, "alice", key=key)
    create(alice, body, "modelexports")
    name = body["metadata"]["name"]
    wait_until(lambda: is_true(get_export(alice, ns, name), "InReview"), 60, "InReview", op)
    return name, key, digest


def _entries_of(service: RealAuditService, export: str, minimum: int = 0) -> list[str]:
    """The actions logged about ``export``, in order."""
    return [
        e.action
        for e in service.entries(minimum)
        if e.resource.kind == "ModelExport" and e.resource.name == export
    ]


def _held(admin: client.ApiClient, ns: str, name: str, op: OperatorProcess) -> dict[str, Any]:
    """Wait until the operator says it cannot log: Released=False/AuditLogUnavailable."""

    def unlogged() -> dict[str, Any] | None:
        cond = condition(get_export(admin, ns, name), "Released") or {}
        return cond if cond.get("reason") == "AuditLogUnavailable" else None

    found: dict[str, Any] = wait_until(unlogged, 60, "Released=False/AuditLogUnavailable", op)
    return found


def _released(admin: client.ApiClient, ns: str, name: str, op: OperatorProcess) -> dict[str, Any]:
    obj: dict[str, Any] = wait_until(
        lambda: (o := get_export(admin, ns, name)) and is_true(o, "Released") and o,
        90,
        "Released once the audit service is back",
        op,
    )
    return obj


def test_nothing_is_released_while_the_real_audit_service_is_down(
    audited_operator: tuple[OperatorProcess, RealAuditService, KillOnAppend],
    admin_api: client.ApiClient,
    user_api: Callable[..., client.ApiClient],
    tenant: Callable[..., str],
    minio: MinioServer,
) -> None:
    op, service, _ = audited_operator
    if not service.healthy():
        service.start()
    t = tenant("health", _members())
    ns = home_ready(admin_api, t, op)
    name, key, digest = _export(admin_api, user_api, minio, op, t, ns)

    service.kill()
    create(user_api("bob"), review_body(ns, name, "bob"), "exportreviews")
    held = _held(admin_api, ns, name, op)
    assert "audit log is unavailable" in held["message"]
    assert sha_at(minio, DEST_EU, key) is None, "released while the audit log was down"
    assert not is_true(get_export(admin_api, ns, name), "Released")

    service.start()
    obj = _released(admin_api, ns, name, op)
    assert sha_at(minio, DEST_EU, key) == digest
    logged = _entries_of(service, name, obj["status"]["releaseIndex"] + 1)
    assert logged.index("model.export.releasing") < logged.index("model.export.released")
    assert obj["status"]["receipt"]  # proved by the service that logged it


def test_a_service_killed_between_copy_and_record_takes_the_copy_back(
    audited_operator: tuple[OperatorProcess, RealAuditService, KillOnAppend],
    admin_api: client.ApiClient,
    user_api: Callable[..., client.ApiClient],
    tenant: Callable[..., str],
    minio: MinioServer,
) -> None:
    op, service, proxy = audited_operator
    if not service.healthy():
        service.start()
    t = tenant("health", _members())
    ns = home_ready(admin_api, t, op)
    name, key, digest = _export(admin_api, user_api, minio, op, t, ns)

    # The intent is logged and the copy made; the service dies as "released" arrives.
    proxy.trigger = b'"model.export.released"'
    create(user_api("bob"), review_body(ns, name, "bob"), "exportreviews")
    assert proxy.fired.wait(60), "the operator never tried to log the release"
    _held(admin_api, ns, name, op)
    assert sha_at(minio, DEST_EU, key) is None, "a copy stayed released without its record"

    service.start()
    obj = _released(admin_api, ns, name, op)
    assert sha_at(minio, DEST_EU, key) == digest
    logged = _entries_of(service, name, obj["status"]["releaseIndex"] + 1)
    # The first attempt's intent is on record and its release is not; the second
    # attempt, once the service was back, logged both.
    assert logged.count("model.export.releasing") == 2, logged
    assert logged.count("model.export.released") == 1, logged
    assert logged[-1] == "model.export.released"
    assert obj["status"]["receipt"]
