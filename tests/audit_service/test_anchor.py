"""The audit service with a checkpoint anchor: a forged history is refused, loudly.

The attack (issue 14): someone who can write the log's volume but not read its key puts
back an older signed checkpoint taken from a receipt, rewrites the later entries with
their CRCs and hashes recomputed, and restarts the service. `sandboxctl audit serve`
runs as a real process on loopback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from audit.anchor import FileCheckpointAnchor
from audit.client import AuditClient
from audit.log import CHECKPOINT_FILE, AuditLog
from audit.note import Signer
from audit.proof import TlogProof
from audit.service import AccessPolicy, create_app, token_digest
from audit.signing import generate_key_file
from audit.verify import verify_log
from tests.audit.helpers import forge_after

from .conftest import free_port, make_event
from .test_cli import ORIGIN, TOKEN, running


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name} in:\n{text}")


def test_the_service_refuses_a_rewritten_log_and_says_why(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "log.key"
    key.parent.mkdir()
    signer = generate_key_file(key, ORIGIN)
    log_dir = tmp_path / "log"
    anchor_file = tmp_path / "anchor-volume" / "checkpoint"
    AuditLog.create(log_dir, ORIGIN, signer).close()
    writers = tmp_path / "writers"
    writers.write_text(f"{token_digest(TOKEN)} operator\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--log", str(log_dir), "--writers", str(writers), "--key", str(key)]
    args += ["--listen", f"127.0.0.1:{port}", "--anchor-file", str(anchor_file)]

    with running(args, f"{url}/healthz", tmp_path):
        assert httpx.get(f"{url}/healthz").status_code == 200
        with AuditClient(url, TOKEN, verifiers=[signer.verifier]) as client:
            client.append([make_event(i) for i in range(10)])
            receipt = client.prove(3)
            client.append([make_event(i) for i in range(10, 20)])
            client.prove(19)
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, "regsandbox_audit_anchor_consistent") == 1
        assert _metric(metrics, "regsandbox_audit_anchored_tree_size") == 20
    anchored = FileCheckpointAnchor(anchor_file).load().note

    old = TlogProof.parse(receipt).checkpoint
    forge_after(log_dir, 10, old)
    verify_log(log_dir, [signer.verifier])  # the forged volume passes `verify --vkey`

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args[args.index("--listen") + 1] = f"127.0.0.1:{port}"
    with running(args, f"{url}/healthz", tmp_path):
        health = httpx.get(f"{url}/healthz")
        assert health.status_code == 503
        [anchor_condition] = [
            c for c in health.json()["conditions"] if c["type"] == "AnchorConsistent"
        ]
        assert anchor_condition["status"] == "False"
        assert anchor_condition["reason"] == "CheckpointAnchorMismatch"
        assert "first 20 entries do not hash" in anchor_condition["message"]
        status = httpx.get(f"{url}/v1/status")
        assert status.status_code == 503
        metrics = httpx.get(f"{url}/metrics").text
        assert _metric(metrics, "regsandbox_audit_anchor_consistent") == 0
        assert _metric(metrics, "regsandbox_audit_anchor_mismatches_total") == 1
        appended = httpx.post(
            f"{url}/v1/entries",
            json={"events": [make_event(99).model_dump(mode="json")]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert appended.status_code == 503
        assert "CheckpointAnchorMismatch" in appended.text
        assert httpx.get(f"{url}/v1/checkpoint").status_code == 503
        assert httpx.get(f"{url}/v1/receipt/15").status_code == 503
    assert (log_dir / CHECKPOINT_FILE).read_bytes() == old  # nothing was signed
    assert FileCheckpointAnchor(anchor_file).load().note == anchored
    assert "refusing to serve the log" in (tmp_path / "server.log").read_text()


def test_an_anchor_moved_by_someone_else_stops_the_running_service(
    tmp_path: Path, serve: Callable[..., Any], signer: Signer
) -> None:
    """Another writer (or anyone) changing the anchor under the service: it stops signing."""
    anchor_file = tmp_path / "anchor" / "checkpoint"
    log = AuditLog.create(
        tmp_path / "log",
        ORIGIN,
        signer,
        checkpoint_interval=0.05,
        anchor=FileCheckpointAnchor(anchor_file),
    )
    policy = AccessPolicy(writers={token_digest(TOKEN): "operator"}, readers={}, open_reads=True)
    try:
        with serve(create_app(log, policy)) as url:
            with AuditClient(url, TOKEN, verifiers=[signer.verifier]) as client:
                client.append([make_event(1)])
                client.prove(0)
                assert httpx.get(f"{url}/healthz").status_code == 200
                anchor_file.write_bytes(anchor_file.read_bytes() + b"\n")  # not the service
                client.append([make_event(2)])
                assert httpx.get(f"{url}/v1/receipt/1").status_code == 503
            health = httpx.get(f"{url}/healthz")
            assert health.status_code == 503
            reasons = {c["type"]: c["reason"] for c in health.json()["conditions"]}
            assert reasons == {
                "AnchorConsistent": "CheckpointAnchorChanged",
                "Writable": "LogStopped",
            }
            metrics = httpx.get(f"{url}/metrics").text
            assert _metric(metrics, "regsandbox_audit_anchor_consistent") == 0
            r = httpx.post(
                f"{url}/v1/entries",
                json={"events": [make_event(3).model_dump(mode="json")]},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert r.status_code == 503
    finally:
        log.close()


def test_without_an_anchor_no_anchor_gauge_is_exported(
    audit_log: AuditLog, serve: Callable[..., Any]
) -> None:
    with serve(create_app(audit_log, AccessPolicy(writers={}, readers={}))) as url:
        metrics = httpx.get(f"{url}/metrics").text
    assert "regsandbox_audit_anchor_consistent" not in metrics
    assert "regsandbox_audit_appends_refused_total 0.0" in metrics


def test_a_mismatch_found_while_running_is_counted_once(
    tmp_path: Path, serve: Callable[..., Any], signer: Signer
) -> None:
    """The mismatch counter (what an alert on its increase watches) also counts an anchor
    changed under the running service, once however often the service is asked."""
    anchor_file = tmp_path / "anchor" / "checkpoint"
    log = AuditLog.create(
        tmp_path / "log",
        ORIGIN,
        signer,
        checkpoint_interval=0.05,
        anchor=FileCheckpointAnchor(anchor_file),
    )
    policy = AccessPolicy(writers={token_digest(TOKEN): "operator"}, readers={}, open_reads=True)
    try:
        with serve(create_app(log, policy)) as url:
            with AuditClient(url, TOKEN, verifiers=[signer.verifier]) as client:
                client.append([make_event(1)])
                client.prove(0)
                metrics = httpx.get(f"{url}/metrics").text
                assert _metric(metrics, "regsandbox_audit_anchor_mismatches_total") == 0
                anchor_file.write_bytes(anchor_file.read_bytes() + b"\n")  # not the service
                client.append([make_event(2)])
            # The next checkpoint (every 0.05 s, in the background) finds the change.
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/healthz").status_code != 503:
                assert time.monotonic() < deadline, "the changed anchor was never noticed"
                time.sleep(0.05)
            for _ in range(3):
                assert httpx.get(f"{url}/healthz").status_code == 503
            metrics = httpx.get(f"{url}/metrics").text
            assert _metric(metrics, "regsandbox_audit_anchor_mismatches_total") == 1
    finally:
        log.close()
