"""Issue 7: the export airlock end to end (real API server, client-certificate users, MinIO)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from typer.testing import CliRunner

from audit.errors import MalformedError, VerificationError
from audit.log import LogReader
from audit.merkle import stored_hash_count
from audit.note import Verifier, b64encode
from audit.proof import TlogProof, verify_tlog_proof
from audit.signing import load_verifier
from sandbox.cli.audit import app as audit_app
from sandbox.cli.export import app as export_app
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.minio import MinioServer
from sandbox.kube.apply import apply
from sandbox.provision.rbac import REVIEWER_CLUSTER_ROLE

from .conftest import DEST_EU, DEST_US, ExportOperator, home_ready, wait_until
from .helpers import (
    condition,
    create,
    create_sandbox,
    export_body,
    get_export,
    get_review,
    is_true,
    put_artifact,
    refused,
    review_body,
    sha_at,
)

pytestmark = [pytest.mark.integration, pytest.mark.s3]
runner = CliRunner()


def _members(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [
        {
            ("group" if who.startswith("group:") else "user"): who.removeprefix("group:"),
            "role": role,
        }
        for who, role in pairs
    ]


def _wait_export(
    api: client.ApiClient,
    ns: str,
    name: str,
    check: Callable[[dict[str, Any]], bool],
    what: str,
    op: ExportOperator,
) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        obj = get_export(api, ns, name)
        return obj if check(obj) else None

    found: dict[str, Any] = wait_until(ready, 30, what, op)
    return found


def _cli(kubeconfig: Path, *args: str) -> Any:
    return runner.invoke(export_app, [*args, "--kubeconfig", str(kubeconfig)])


def _actions(entries: list[dict[str, Any]], export: str) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if e["resource"]["kind"] == "ModelExport" and e["resource"]["name"] == export
    ]


def _logged(
    read: Callable[[], list[dict[str, Any]]], export: str, action: str
) -> list[dict[str, Any]]:
    """Entries of ``action`` for ``export``, once a checkpoint covers them (about 1 s)."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: [e for e in _actions(read(), export) if e["action"] == action],
        10,
        f"{action} of {export} in the audit log",
    )


def test_admission_takes_identities_from_the_api_server(
    export_operator: ExportOperator, admin_api: client.ApiClient, user_api: Any, tenant: Any
) -> None:
    t = tenant("finance", _members(("alice", "member"), ("bob", "reviewer")))
    ns = home_ready(admin_api, t, export_operator)
    alice, bob = user_api("alice"), user_api("bob")
    sbx = create_sandbox(alice, t)
    forged = export_body(t, sbx, "bob")
    # The policies take a moment to reach the API server's admission chain.
    wait_until(
        lambda: _try(lambda: create(alice, forged, "modelexports", dry_run=True)) == "refused",
        30,
        "the admission policies to be active",
    )
    exc = refused(lambda: create(alice, forged, "modelexports"))
    assert exc.status == 403
    assert "requestedBy" in str(exc.body)

    honest = create(alice, export_body(t, sbx, "alice"), "modelexports")
    honest["spec"]["justification"] = "changed my mind"
    exc = refused(
        lambda: client.CustomObjectsApi(alice).replace_namespaced_custom_object(
            "regsandbox.io", "v1alpha1", ns, "modelexports", honest["metadata"]["name"], honest
        )
    )
    assert exc.status == 403
    assert "immutable" in str(exc.body)

    name = honest["metadata"]["name"]
    exc = refused(lambda: create(bob, review_body(ns, name, "carol"), "exportreviews"))
    assert exc.status == 403
    assert "reviewer" in str(exc.body)
    exc = refused(
        lambda: create(bob, review_body(ns, name, "bob", groups=["auditors"]), "exportreviews")
    )
    assert exc.status == 403
    assert "groups" in str(exc.body)
    create(bob, review_body(ns, name, "bob", "reject", "not needed"), "exportreviews")


def _try(call: Callable[[], Any]) -> str:
    try:
        call()
    except client.ApiException as exc:
        return "refused" if exc.status == 403 else "error"
    return "accepted"


def _verify_all_tampering(proof: bytes, entry: bytes, verifiers: list[Verifier]) -> None:
    verify_tlog_proof(proof, entry, verifiers)
    for blob, which in ((entry, "entry"), (proof, "proof")):
        for i in range(len(blob)):
            bad = bytearray(blob)
            bad[i] = bad[i] ^ 0x01 if bad[i] ^ 0x01 != 0x0A else bad[i] ^ 0x02
            args = (bytes(bad), entry) if which == "proof" else (proof, bytes(bad))
            with pytest.raises((VerificationError, MalformedError)):
                verify_tlog_proof(*args, verifiers)


def test_finance_export_needs_two_distinct_reviewers_and_carries_a_receipt(
    export_operator: ExportOperator,
    admin_api: client.ApiClient,
    user_api: Any,
    control_plane: ControlPlane,
    tenant: Any,
    minio: MinioServer,
    export_audit: tuple[Path, Path],
    audit_entries: Callable[[], list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    t = tenant(
        "finance",
        _members(
            ("alice", "member"),
            ("alice", "reviewer"),
            ("bob", "reviewer"),
            ("group:risk-reviewers", "reviewer"),
            ("dave", "member"),
        ),
    )
    ns = home_ready(admin_api, t, export_operator)
    kc = {
        u: control_plane.add_user(u, g)
        for u, g in (("alice", []), ("bob", []), ("carol", ["risk-reviewers"]), ("eve", []))
    }
    alice, dave, eve = user_api("alice"), user_api("dave"), user_api("eve")
    sbx = create_sandbox(alice, t)
    data = b"finance model weights " * 1000
    digest = put_artifact(minio, t, sbx, "model.onnx", data)
    body = export_body(t, sbx, "alice", key=f"{t}/fraud-model.onnx")
    name = body["metadata"]["name"]
    create(alice, body, "modelexports")
    obj = _wait_export(
        alice, ns, name, lambda o: is_true(o, "InReview"), "InReview", export_operator
    )
    assert obj["status"]["requiredApprovals"] == 2
    assert obj["status"]["sha256"] == digest

    # The requester cannot approve, even holding the reviewer role.
    result = _cli(kc["alice"], "approve", name, "-n", ns)
    assert result.exit_code == 1, result.output
    assert "SelfReview" in result.output
    # A member without the reviewer role cannot even create a review (RBAC).
    assert (
        refused(lambda: create(dave, review_body(ns, name, "dave"), "exportreviews")).status == 403
    )
    # Review rights given outside the tenant do not make a reviewer.
    apply(
        admin_api,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "eve-sneaks-in", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": REVIEWER_CLUSTER_ROLE,
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "eve"}],
        },
    )
    sneaky = create(eve, review_body(ns, name, "eve"), "exportreviews")
    wait_until(
        lambda: (
            (condition(get_review(eve, ns, sneaky["metadata"]["name"]), "Accepted") or {}).get(
                "reason"
            )
            == "NotAReviewer"
        ),
        30,
        "eve's review to be refused",
        export_operator,
    )
    # Two approvals by the same reviewer count once.
    for _ in range(2):
        result = _cli(kc["bob"], "approve", name, "-n", ns, "-m", "looks fine")
        assert result.exit_code == 0, result.output
    obj = _wait_export(
        alice,
        ns,
        name,
        lambda o: o["status"].get("approvals") == ["bob"],
        "bob's approval",
        export_operator,
    )
    assert not is_true(obj, "Approved")
    assert is_true(obj, "InReview")
    assert sha_at(minio, DEST_EU, f"{t}/fraud-model.onnx") is None
    # A second, distinct reviewer (through a tenant group) completes the review.
    result = _cli(kc["carol"], "approve", name, "-n", ns, "-m", "ok for CSSF")
    assert result.exit_code == 0, result.output
    obj = _wait_export(
        alice, ns, name, lambda o: is_true(o, "Released"), "Released", export_operator
    )
    assert obj["status"]["approvals"] == ["bob", "carol"]
    assert sha_at(minio, DEST_EU, f"{t}/fraud-model.onnx") == digest

    # Every transition is on record, with who did it.
    entries = _actions(audit_entries(), name)
    seen = [(e["action"], e["actor"].get("user")) for e in entries]
    assert ("model.export.submitted", "alice") in seen
    assert ("model.export.review-refused", "alice") in seen
    assert ("model.export.review-refused", "eve") in seen
    assert ("model.export.reviewed", "bob") in seen
    assert ("model.export.reviewed", "carol") in seen
    released = next(e for e in entries if e["action"] == "model.export.released")
    assert released["details"]["approvers"] == ["bob", "carol"]
    assert released["details"]["requester"] == "alice"
    assert released["details"]["sha256"] == digest
    assert released["index"] == obj["status"]["releaseIndex"]

    # The receipt: printed by the CLI, verified offline, broken by any changed byte.
    result = _cli(kc["carol"], "receipt", name, "-n", ns)
    assert result.exit_code == 0, result.output
    proof = obj["status"]["receipt"].encode()
    assert result.stdout.encode() == proof
    with LogReader(export_audit[0]) as reader:
        entry = reader.entry_bytes(obj["status"]["releaseIndex"])
    vkey = export_audit[0].parent / "vkey"
    (tmp_path / "proof").write_bytes(proof)
    (tmp_path / "entry").write_bytes(entry)
    ok = runner.invoke(
        audit_app,
        [
            "verify-proof",
            "--proof",
            str(tmp_path / "proof"),
            "--entry",
            str(tmp_path / "entry"),
            "--vkey",
            str(vkey),
        ],
    )
    assert ok.exit_code == 0, ok.output
    (tmp_path / "bad").write_bytes(entry.replace(b"alice", b"alicf"))
    bad = runner.invoke(
        audit_app,
        [
            "verify-proof",
            "--proof",
            str(tmp_path / "proof"),
            "--entry",
            str(tmp_path / "bad"),
            "--vkey",
            str(vkey),
        ],
    )
    assert bad.exit_code == 3, bad.output
    _verify_all_tampering(proof, entry, [load_verifier(vkey)])
    _verified_by_go(export_audit, proof, entry, tmp_path)


def _verified_by_go(
    export_audit: tuple[Path, Path], proof: bytes, entry: bytes, tmp_path: Path
) -> None:
    """The release receipt, checked with golang.org/x/mod/sumdb (tools/interop)."""
    from audit.log import HASHES_FILE
    from audit.signing import load_signer
    from tests.audit.test_interop_go import run_go_interop

    log, key = export_audit
    signer = load_signer(key)
    go_dir = tmp_path / "go"
    go_dir.mkdir()
    receipt = TlogProof.parse(proof)
    old_size = int(receipt.checkpoint.split(b"\n")[1])
    with LogReader(log) as reader:
        checkpoint = reader.checkpoint_note
        size = reader.size
        consistency = [
            {
                "old_checkpoint": receipt.checkpoint.decode(),
                "proof": [b64encode(h) for h in reader.consistency_proof(old_size)],
            }
        ]
    (go_dir / "hashes").write_bytes(
        (log / HASHES_FILE).read_bytes()[: stored_hash_count(size) * 32]
    )
    run_go_interop(
        {
            "origin": signer.name,
            "vkey": signer.verifier.vkey,
            "skey": signer.private_key,
            "checkpoint": checkpoint.decode(),
            "hashes_file": "hashes",
            "receipts": [{"entry_b64": base64.b64encode(entry).decode(), "proof": proof.decode()}],
            "consistency": consistency,
        },
        go_dir,
    )


def _health_tenant(tenant: Any, admin_api: client.ApiClient, op: ExportOperator) -> tuple[str, str]:
    t = tenant("health", _members(("alice", "member"), ("bob", "reviewer")))
    return t, home_ready(admin_api, t, op)


def test_policy_denies_other_types_outside_areas_and_unregistered_buckets(
    export_operator: ExportOperator,
    admin_api: client.ApiClient,
    user_api: Any,
    tenant: Any,
    minio: MinioServer,
    audit_entries: Callable[[], list[dict[str, Any]]],
) -> None:
    t, ns = _health_tenant(tenant, admin_api, export_operator)
    alice = user_api("alice")
    dataset = f"records-{t}"
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
                "personalData": "personal",
                "allowedPurposes": ["sepsis-model"],
            },
        },
    )
    sbx = create_sandbox(
        alice, t, purpose="sepsis-model", datasets=[{"name": dataset, "purpose": "sepsis-model"}]
    )
    put_artifact(minio, t, sbx, "model.onnx", b"weights")
    put_artifact(minio, t, sbx, "rows.csv", b"patient,diagnosis\n")
    cases = {
        "HEALTH_EXPORT_ARTIFACT_NOT_ALLOWED": export_body(
            t, sbx, "alice", path="rows.csv", type_="other"
        ),
        "RESIDENCY_EXPORT_OUTSIDE_EEA": export_body(
            t, sbx, "alice", bucket=DEST_US, region="aws:us-east-1"
        ),
        "EXPORT_DESTINATION_NOT_REGISTERED": export_body(t, sbx, "alice", bucket="somewhere-else"),
        "EXPORT_DESTINATION_REGION_MISMATCH": export_body(
            t, sbx, "alice", bucket=DEST_US, region="aws:eu-central-1"
        ),
    }
    for body in cases.values():
        create(alice, body, "modelexports")
    for code, body in cases.items():
        name = body["metadata"]["name"]
        obj = _wait_export(
            alice, ns, name, lambda o: is_true(o, "Rejected"), f"{code} to reject", export_operator
        )
        assert condition(obj, "Rejected")["reason"] == "PolicyDenied"  # type: ignore[index]
        assert code in [v["code"] for v in obj["status"]["policy"]["violations"]]
        denied = _logged(audit_entries, name, "model.export.denied")
        assert code in denied[0]["decision"]["codes"]


def test_an_artifact_changed_after_approval_is_not_released(
    export_operator: ExportOperator,
    admin_api: client.ApiClient,
    user_api: Any,
    tenant: Any,
    minio: MinioServer,
    audit_entries: Callable[[], list[dict[str, Any]]],
) -> None:
    t, ns = _health_tenant(tenant, admin_api, export_operator)
    alice, bob = user_api("alice"), user_api("bob")
    sbx = create_sandbox(alice, t)
    put_artifact(minio, t, sbx, "model.onnx", b"the reviewed model")
    body = export_body(t, sbx, "alice", key=f"{t}/model.onnx")
    name = body["metadata"]["name"]
    create(alice, body, "modelexports")
    _wait_export(alice, ns, name, lambda o: is_true(o, "InReview"), "InReview", export_operator)
    put_artifact(minio, t, sbx, "model.onnx", b"a different model slipped in")
    create(bob, review_body(ns, name, "bob"), "exportreviews")
    obj = _wait_export(
        alice, ns, name, lambda o: is_true(o, "Rejected"), "Rejected", export_operator
    )
    assert condition(obj, "Rejected")["reason"] == "ArtifactChanged"  # type: ignore[index]
    assert not is_true(obj, "Released")
    assert sha_at(minio, DEST_EU, f"{t}/model.onnx") is None
    failed = _logged(audit_entries, name, "model.export.release-failed")
    assert failed[0]["outcome"] == "failure"
    assert failed[0]["details"]["reason"] == "ArtifactChanged"


def test_a_rejection_closes_an_export_whose_artifact_never_came(
    export_operator: ExportOperator,
    admin_api: client.ApiClient,
    user_api: Any,
    tenant: Any,
    audit_entries: Callable[[], list[dict[str, Any]]],
) -> None:
    t, ns = _health_tenant(tenant, admin_api, export_operator)
    alice, bob = user_api("alice"), user_api("bob")
    sbx = create_sandbox(alice, t)
    body = export_body(t, sbx, "alice")  # nothing is put in the outbox
    name = body["metadata"]["name"]
    create(alice, body, "modelexports")

    def waiting(obj: Any) -> bool:
        checked = condition(obj, "PolicyChecked")
        return bool(checked and checked["reason"] == "ArtifactNotFound")

    _wait_export(alice, ns, name, waiting, "ArtifactNotFound", export_operator)
    create(bob, review_body(ns, name, "bob", "reject", "not this quarter"), "exportreviews")
    obj = _wait_export(
        alice, ns, name, lambda o: is_true(o, "Rejected"), "Rejected", export_operator
    )
    rejected = condition(obj, "Rejected")
    assert rejected is not None
    assert rejected["reason"] == "RejectedByReviewer"
    assert "not this quarter" in rejected["message"]
    assert _logged(audit_entries, name, "model.export.rejected")[0]["outcome"] == "denied"


def test_revocation_removes_the_object_and_logs_who_and_why(
    export_operator: ExportOperator,
    admin_api: client.ApiClient,
    user_api: Any,
    control_plane: ControlPlane,
    tenant: Any,
    minio: MinioServer,
    audit_entries: Callable[[], list[dict[str, Any]]],
) -> None:
    t, ns = _health_tenant(tenant, admin_api, export_operator)
    alice, bob = user_api("alice"), user_api("bob")
    sbx = create_sandbox(alice, t)
    put_artifact(minio, t, sbx, "agg.parquet", b"aggregate statistics")
    body = export_body(
        t, sbx, "alice", path="agg.parquet", type_="aggregate", key=f"{t}/agg.parquet"
    )
    name = body["metadata"]["name"]
    create(alice, body, "modelexports")
    create(bob, review_body(ns, name, "bob"), "exportreviews")
    _wait_export(alice, ns, name, lambda o: is_true(o, "Released"), "Released", export_operator)
    assert (
        sha_at(minio, DEST_EU, f"{t}/agg.parquet")
        == hashlib.sha256(b"aggregate statistics").hexdigest()
    )

    result = _cli(
        control_plane.add_user("bob", []),
        "revoke",
        name,
        "-n",
        ns,
        "-m",
        "small cells re-identify patients",
    )
    assert result.exit_code == 0, result.output
    obj = _wait_export(alice, ns, name, lambda o: is_true(o, "Revoked"), "Revoked", export_operator)
    assert obj["status"]["revokedBy"] == "bob"
    assert obj["status"]["revokedReason"] == "small cells re-identify patients"
    assert sha_at(minio, DEST_EU, f"{t}/agg.parquet") is None
    revoked = _logged(audit_entries, name, "model.export.revoked")
    assert len(revoked) == 1
    assert revoked[0]["actor"]["user"] == "bob"
    assert revoked[0]["details"]["reason"] == "small cells re-identify patients"
    assert dt.datetime.fromisoformat(obj["status"]["revokedAt"].replace("Z", "+00:00"))


class _Sink:
    """An audit sink that refuses some batches, as a log that is down would."""

    def __init__(self, refuse: Callable[[list[str]], bool]) -> None:
        self.refuse = refuse
        self.taken: list[str] = []

    def append(self, events: Any) -> list[int]:
        from audit.client import AuditUnavailable

        actions = [e.action for e in events]
        if self.refuse(actions):
            raise AuditUnavailable("audit log down (test)")
        self.taken += actions
        return list(range(len(self.taken) - len(actions), len(self.taken)))

    def checkpoint(self) -> bytes:
        return b""

    def prove(self, index: int) -> bytes:
        from audit.client import AuditUnavailable

        raise AuditUnavailable("down")


def test_nothing_is_released_while_the_audit_log_is_down(
    export_operator: ExportOperator,
    admin_api: client.ApiClient,
    user_api: Any,
    tenant: Any,
    minio: MinioServer,
    outbox_settings: dict[str, Any],
) -> None:
    from sandbox.artifacts.outbox import ArtifactStore, OutboxSettings
    from sandbox.lifecycle.exports import reconcile_export
    from sandbox.lifecycle.platform import Platform
    from sandbox.policy.embedded import EmbeddedEngine
    from sandbox.policy.policyset import DEFAULT_POLICY_DIR, PolicySet

    t, ns = _health_tenant(tenant, admin_api, export_operator)
    alice, bob = user_api("alice"), user_api("bob")
    sbx = create_sandbox(alice, t)
    put_artifact(minio, t, sbx, "model.onnx", b"model")
    store = ArtifactStore(OutboxSettings.model_validate(outbox_settings))
    # An export the session's operator never sees: reconciled here, in-process.
    body = export_body(t, sbx, "alice", key=f"{t}/model.onnx")
    body["metadata"]["creationTimestamp"] = "2020-01-01T00:00:00Z"
    body["metadata"]["generation"] = 1
    create(bob, review_body(ns, body["metadata"]["name"], "bob"), "exportreviews")
    policies = PolicySet.from_directory(DEFAULT_POLICY_DIR)

    def platform(sink: _Sink) -> Platform:
        return Platform(
            api=admin_api,
            engine=EmbeddedEngine(policies),
            audit=sink,
            keys=SimpleNamespace(name="local"),
            storage=None,  # type: ignore[arg-type]
            cluster_region="onprem:lu-national-1",
            cluster_jurisdiction="LU",
        )

    for refuse in (lambda a: True, lambda a: "model.export.released" in a):
        sink = _Sink(refuse)
        result = reconcile_export(platform(sink), store, body)
        while result.retry_after is None and not is_true({"status": result.status}, "Rejected"):
            body["status"] = result.status
            result = reconcile_export(platform(sink), store, body)
            if is_true(body, "Released"):
                break
        assert result.retry_after is not None
        assert condition({"status": result.status}, "Released")["reason"] == "AuditLogUnavailable"  # type: ignore[index]
        assert not is_true({"status": result.status}, "Released")
        assert sha_at(minio, DEST_EU, f"{t}/model.onnx") is None, "released without a log entry"
        body.pop("status", None)
