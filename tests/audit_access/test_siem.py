"""The SIEM exporter: OCSF events over OTLP/HTTP, killed and restarted mid-stream.

A local OTLP/HTTP receiver (a real HTTP server in the test) records every log record.
``sandboxctl audit siem-export`` runs as a process; it is SIGKILLed while streaming and
started again with the same cursor. Every entry must arrive, each record must carry the
entry's uid and index, and at most the one batch in flight at the kill may arrive twice
(same uid), so a receiver keying on the uid stores each entry exactly once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from audit.log import AuditLog
from audit.merkle import leaf_hash
from audit.note import Signer, b64encode
from audit.siem import ocsf_event
from tests.audit_access.conftest import event
from tests.audit_service.conftest import wait_for
from tests.servers import serve_app, stop_process

ORIGIN = "audit.regsandbox.test/siem"
BATCH = 50


class Receiver:
    """An OTLP/HTTP logs endpoint that keeps every record (and can refuse for a while)."""

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []
        self.refuse = False
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/v1/logs", self.logs, methods=["POST"])])

    async def logs(self, request: Request) -> Response:
        if self.refuse:
            return Response(status_code=503)
        body = await request.json()
        found = [
            json.loads(r["body"]["stringValue"])
            for rl in body["resourceLogs"]
            for sl in rl["scopeLogs"]
            for r in sl["logRecords"]
        ]
        with self.lock:
            self.records.extend(found)
        return Response("{}", media_type="application/json")

    def indices(self) -> list[int]:
        with self.lock:
            return [int(r["metadata"]["sequence"]) for r in self.records]  # type: ignore[index]


def _exporter(log: Path, url: str, cursor: Path, vkey: str, out: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "sandbox.cli", "audit", "siem-export", "--log", str(log),
        "--otlp-url", f"{url}/v1/logs", "--cursor", str(cursor), "--vkey", vkey,
        "--batch", str(BATCH), "--interval", "0.1",
    ]  # fmt: skip
    with out.open("ab") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


def test_killed_and_restarted_the_exporter_loses_nothing_and_repeats_one_batch_at_most(
    tmp_path: Path,
) -> None:
    signer = Signer.generate(ORIGIN)
    total = 3000
    with AuditLog.create(tmp_path / "log", ORIGIN, signer) as log:
        log.append_batch([event("bank" if n % 2 else None, n) for n in range(total)])
        log.publish_checkpoint()
        root = log.checkpoint.root
        first = log.entry_bytes(7)
    receiver = Receiver()
    cursor = tmp_path / "cursor"
    out = tmp_path / "exporter.log"
    vkey = signer.verifier.vkey
    with serve_app(receiver.app) as url:
        proc = _exporter(tmp_path / "log", url, cursor, vkey, out)
        try:
            wait_for(lambda: len(receiver.indices()) >= 500, "the first records")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            stop_process(proc)
        assert len(set(receiver.indices())) < total, "killed too late to test a restart"
        receiver.refuse = True  # the SIEM is down for a while when the exporter comes back
        proc = _exporter(tmp_path / "log", url, cursor, vkey, out)
        try:
            wait_for(lambda: "SIEM export paused" in out.read_text(), "a refused batch")
            receiver.refuse = False
            wait_for(lambda: len(set(receiver.indices())) == total, "every entry", timeout=60)
        finally:
            stop_process(proc)
    indices = receiver.indices()
    assert sorted(set(indices)) == list(range(total))
    assert len(indices) - total <= BATCH, f"{len(indices) - total} records repeated"
    assert cursor.read_text().strip() == str(total)
    by_index = {int(r["metadata"]["sequence"]): r for r in receiver.records}  # type: ignore[index]
    uids = {r["metadata"]["uid"] for r in receiver.records}  # type: ignore[index]
    assert len(uids) == total  # a repeated record carries the same uid
    seventh = by_index[7]
    assert seventh["class_uid"] == 6003
    regsandbox = seventh["unmapped"]["regsandbox"]  # type: ignore[index]
    assert regsandbox["leaf_hash"] == b64encode(leaf_hash(first))
    assert regsandbox["checkpoint"] == {"size": total, "root": b64encode(root)}


def test_an_ocsf_event_says_who_did_what_to_which_resource_and_how_it_ended() -> None:
    from audit.checkpoint import Checkpoint
    from audit.entry import Actor, DecisionRecord, Event, Resource, encode_entry

    data = encode_entry(
        Event(
            actor=Actor(user="alice", groups=("bank:members",), pod="sbx-bank-a/train-0"),
            action="dataset.read",
            resource=Resource(kind="Dataset", name="claims", tenant="bank", sandbox="a"),
            decision=DecisionRecord(allow=False, codes=("GRANT_MISSING",)),
            outcome="denied",
            request_id="req-1",
        ),
        41,
    )
    cp = Checkpoint(ORIGIN, 42, b"\x01" * 32)
    found = ocsf_event(data, ORIGIN, cp)
    assert found["type_uid"] == 600302  # API Activity: Read
    assert found["status_id"] == 2
    assert found["actor"]["user"] == {"name": "alice", "groups": [{"name": "bank:members"}]}
    assert found["resources"] == [
        {"type": "Dataset", "name": "claims", "labels": ["tenant=bank", "sandbox=a"]}
    ]
    assert found["metadata"]["sequence"] == 41
    assert found["api"] == {"operation": "dataset.read", "request": {"uid": "req-1"}}
    assert found["unmapped"]["regsandbox"]["decision"]["codes"] == ["GRANT_MISSING"]
