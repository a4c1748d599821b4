"""The SIEM exporter: every entry stored exactly once by an idempotent receiver, whatever kills it.

The receiver is a real OTLP/HTTP logs endpoint (a Starlette app on a free port) that
behaves like an idempotent SIEM: it stores each record under its ``metadata.uid``, as
Elasticsearch stores a document under its ``_id``. It also keeps every raw arrival, so
the tests see exactly what went over the wire and when.

``sandboxctl audit siem-export`` runs as a process reading a log that a writer keeps
appending to. It is SIGKILLed several times: sometimes right after the receiver stored a
batch and before the answer left (the acknowledgement is lost: the worst case), sometimes
at a random point of the stream. Each time it is started again with the same cursor.
What must hold, whatever the kill points:

- the receiver stores every entry of the log exactly once, under ``<origin>#<index>``,
  with its index, the hash of its exact bytes and a checkpoint of the log that covers it
  (the inclusion proof against that checkpoint's root verifies);
- each run sends in index order without a gap, and a restart repeats at most the one
  batch whose acknowledgement was not recorded.

A receiver that answers 503 or does not answer in time gets the batch again, and loses
nothing; one that refuses a batch for good stops the exporter with the cursor unmoved.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from audit.checkpoint import Checkpoint
from audit.errors import MalformedError
from audit.log import AuditLog
from audit.merkle import leaf_hash, verify_inclusion
from audit.note import Signer, b64decode, b64encode
from audit.siem import (
    Cursor,
    Exporter,
    LocalSource,
    OtlpSink,
    ReceiverRefusedError,
    entry_uid,
    ocsf_event,
)
from tests.audit_access.conftest import event
from tests.audit_service.conftest import wait_for
from tests.servers import serve_app, stop_process

ORIGIN = "audit.regsandbox.test/siem"
BATCH = 50


@dataclass
class Arrival:
    """One request as it reached the receiver."""

    generation: int
    """Which exporter process sent it (the test's count of starts)."""
    indices: list[int]
    """Indices of its records, in the order they came."""


@dataclass
class Receiver:
    """An idempotent OTLP/HTTP logs receiver that can misbehave on cue.

    ``script`` is consumed one item per request: ``"ok"``, ``"503"`` (refuse, store
    nothing), ``"hang"`` (store, then answer only after the next request arrived: the
    sender timed out and sent again), ``"400"`` (refuse for good) or ``"partial"``
    (store, answer 200 with an OTLP partial success rejecting a record). After the
    script, every request is ``"ok"``. ``after_store`` runs after a batch is stored and
    before the answer is sent.
    """

    stored: dict[str, dict[str, Any]] = field(default_factory=dict)
    arrivals: list[Arrival] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    script: list[str] = field(default_factory=list)
    generation: int = 0
    after_store: Callable[[], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _next_request: asyncio.Event | None = None

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/logs", self.logs, methods=["POST"])])

    async def logs(self, request: Request) -> Response:
        if self._next_request is not None:
            self._next_request.set()
        behaviour = self.script.pop(0) if self.script else "ok"
        if behaviour == "503":
            return Response(status_code=503)
        if behaviour == "400":
            return JSONResponse({"message": "schema mismatch"}, status_code=400)
        body = await request.json()
        records = [
            json.loads(r["body"]["stringValue"])
            for rl in body["resourceLogs"]
            for sl in rl["scopeLogs"]
            for r in sl["logRecords"]
        ]
        with self.lock:
            self.arrivals.append(
                Arrival(self.generation, [int(r["metadata"]["sequence"]) for r in records])
            )
            for record in records:
                first = self.stored.setdefault(record["metadata"]["uid"], record)
                ours, again = first["unmapped"]["regsandbox"], record["unmapped"]["regsandbox"]
                if (ours["index"], ours["leaf_hash"]) != (again["index"], again["leaf_hash"]):
                    self.conflicts.append(record["metadata"]["uid"])  # a uid reused
        if self.after_store is not None:
            self.after_store()
        if behaviour == "hang":
            self._next_request = asyncio.Event()
            await asyncio.wait_for(self._next_request.wait(), timeout=60)
            self._next_request = None
        if behaviour == "partial":
            partial = {"rejectedLogRecords": "1", "errorMessage": "field too long"}
            return JSONResponse({"partialSuccess": partial})
        return JSONResponse({})

    def count(self) -> int:
        with self.lock:
            return len(self.stored)

    def raw(self) -> int:
        with self.lock:
            return sum(len(a.indices) for a in self.arrivals)


def _exporter(
    log: Path, url: str, cursor: Path, vkey: str, out: Path, *extra: str
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "sandbox.cli", "audit", "siem-export", "--log", str(log),
        "--otlp-url", f"{url}/v1/logs", "--cursor", str(cursor), "--vkey", vkey,
        "--batch", str(BATCH), "--interval", "0.05", *extra,
    ]  # fmt: skip
    with out.open("ab") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)


def _check_stored_exactly_once(receiver: Receiver, log: AuditLog, total: int) -> None:
    """Every entry once, under its uid, with its bytes' hash and a checkpoint covering it."""
    assert receiver.conflicts == []
    assert sorted(receiver.stored) == sorted(entry_uid(ORIGIN, i) for i in range(total))
    for index in range(total):
        record = receiver.stored[entry_uid(ORIGIN, index)]
        ours = record["unmapped"]["regsandbox"]
        assert record["metadata"]["sequence"] == ours["index"] == index
        leaf = leaf_hash(log.entry_bytes(index))
        assert ours["leaf_hash"] == b64encode(leaf)
        assert ours["event_id"] == log.entry(index).event_id
        size, root = ours["checkpoint"]["size"], b64decode(ours["checkpoint"]["root"], "root")
        assert index < size <= log.size
        verify_inclusion(leaf, index, size, log.inclusion_proof(index, size), root)


def _repeats(receiver: Receiver) -> dict[int, int]:
    """Check the raw arrivals: in order, no gap, a run resumes at most one batch back;
    return how many records each exporter process sent that had been sent before."""
    high = 0  # every index below was sent at least once
    repeated_by: dict[int, int] = {}
    previous: Arrival | None = None
    for arrival in receiver.arrivals:
        first, end = arrival.indices[0], arrival.indices[0] + len(arrival.indices)
        assert arrival.indices == list(range(first, end)), "a batch out of order"
        assert first <= high, f"entries {high}..{first - 1} were skipped"
        if previous is not None and previous.generation == arrival.generation:
            # The next batch, or the unacknowledged one again (a retry in the same run).
            assert first in (previous.indices[-1] + 1, previous.indices[0])
        else:
            assert first >= high - BATCH, "a restart went back further than one batch"
        repeated_by[arrival.generation] = repeated_by.get(arrival.generation, 0) + max(
            0, min(high, end) - first
        )
        high, previous = max(high, end), arrival
    return repeated_by


class Writer(threading.Thread):
    """Appends ``total`` entries while the exporter streams, at most 300 ahead of it."""

    def __init__(self, log: AuditLog, receiver: Receiver, total: int) -> None:
        super().__init__(name="writer")
        self.log, self.receiver, self.total = log, receiver, total
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            n = 0
            while n < self.total and not self.stop.is_set():
                if n - self.receiver.count() > 300:
                    self.stop.wait(0.005)
                    continue
                tenant = "bank" if n % 3 else None
                self.log.append_batch([event(tenant, n + k) for k in range(20)])
                n += 20
        except BaseException as exc:  # reported by the test: a thread's error fails none
            self.errors.append(exc)


def _kill_at(
    receiver: Receiver, start: Callable[[], subprocess.Popen[bytes]], point: int, ack_lost: bool
) -> None:
    """Start an exporter and SIGKILL it once the receiver stored ``point`` entries.

    With ``ack_lost`` the receiver kills it itself, after storing the batch and before
    answering: the exporter never learns that the batch arrived.
    """
    proc = start()

    def kill_in_receiver() -> None:
        if receiver.count() >= point:
            receiver.after_store = None
            proc.send_signal(signal.SIGKILL)

    receiver.after_store = kill_in_receiver if ack_lost else None
    try:
        wait_for(lambda: receiver.count() >= point, f"{point} entries stored", timeout=60)
        proc.send_signal(signal.SIGKILL)  # (again, if the receiver did already)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        receiver.after_store = None
        stop_process(proc)


def test_killed_again_and_again_while_the_log_grows_every_entry_is_stored_exactly_once(
    tmp_path: Path,
) -> None:
    seed = secrets.randbits(32)
    rng = random.Random(seed)  # noqa: S311 - kill points, not secrets
    signer = Signer.generate(ORIGIN)
    total, kills = 2400, 4
    receiver = Receiver()
    cursor = tmp_path / "cursor"
    out = tmp_path / "exporter.log"
    with AuditLog.create(tmp_path / "log", ORIGIN, signer, checkpoint_interval=0.05) as log:
        writer = Writer(log, receiver, total)
        writer.start()
        try:
            with serve_app(receiver.app()) as url:

                def start() -> subprocess.Popen[bytes]:
                    return _exporter(tmp_path / "log", url, cursor, signer.verifier.vkey, out)

                for n, point in enumerate(sorted(rng.sample(range(100, total - 400), kills))):
                    receiver.generation = n
                    _kill_at(receiver, start, point, ack_lost=n % 2 == 0)
                receiver.generation = kills
                last = start()
                try:
                    writer.join(timeout=120)
                    assert writer.errors == []
                    wait_for(lambda: receiver.count() == total, "every entry", timeout=120)
                    wait_for(lambda: Cursor(cursor).load() == total, "the cursor at the end")
                finally:
                    stop_process(last)
        finally:
            writer.stop.set()
            writer.join(timeout=30)
        _check_stored_exactly_once(receiver, log, total)
    repeats = _repeats(receiver)
    assert all(count <= BATCH for count in repeats.values()), (seed, repeats)
    assert receiver.raw() > total, f"no kill landed in the ambiguous window (seed {seed})"
    assert Cursor(cursor).read() == (total, ORIGIN)


def test_refusals_and_timeouts_are_retried_and_lose_nothing(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    total = 600
    with AuditLog.create(tmp_path / "log", ORIGIN, signer) as log:
        log.append_batch([event("bank", n) for n in range(total)])
        log.publish_checkpoint()
        # Down, overloaded, then a stored batch whose answer comes too late, then down again.
        receiver = Receiver(script=["ok", "ok", "503", "503", "hang", "ok", "503"])
        cursor = tmp_path / "cursor"
        out = tmp_path / "exporter.log"
        with serve_app(receiver.app()) as url:
            proc = _exporter(
                tmp_path / "log", url, cursor, signer.verifier.vkey, out, "--timeout", "1"
            )
            try:
                wait_for(lambda: receiver.count() == total, "every entry", timeout=60)
                wait_for(lambda: Cursor(cursor).load() == total, "the cursor at the end")
            finally:
                stop_process(proc)
        _check_stored_exactly_once(receiver, log, total)
    assert sum(_repeats(receiver).values()) <= BATCH  # the one timeout repeats its batch
    assert receiver.raw() > total
    text = out.read_text()
    assert text.count("SIEM export paused") >= 4
    assert "answered 503" in text
    assert "did not answer in time" in text


@pytest.mark.parametrize("refusal", ["400", "partial"])
def test_a_receiver_refusing_for_good_stops_the_exporter_with_the_cursor_unmoved(
    tmp_path: Path, refusal: str
) -> None:
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer) as log:
        log.append_batch([event(None, n) for n in range(40)])
        log.publish_checkpoint()
        receiver = Receiver(script=["ok", refusal])
        cursor = Cursor(tmp_path / "cursor")
        with serve_app(receiver.app()) as url:
            sink = OtlpSink(f"{url}/v1/logs")
            exporter = Exporter(
                LocalSource(log), sink, cursor, [signer.verifier], batch=10, resume_batch=10
            )
            with pytest.raises(ReceiverRefusedError, match=r"refused|rejected 1 record"):
                exporter.run_once()
            sink.close()
    assert cursor.read() == (10, ORIGIN)  # the refused batch is not counted as delivered


def test_the_cursor_is_bound_to_its_log_and_reads_the_older_format(tmp_path: Path) -> None:
    signer = Signer.generate(ORIGIN)
    with AuditLog.create(tmp_path / "log", ORIGIN, signer) as log:
        log.append_batch([event(None, n) for n in range(5)])
        log.publish_checkpoint()
        path = tmp_path / "cursor"
        path.write_text("3\n")  # written by the previous release
        assert Cursor(path).read() == (3, None)
        other = Cursor(tmp_path / "other")
        other.save(2, "audit.regsandbox.test/another-log")
        receiver = Receiver()
        with serve_app(receiver.app()) as url:
            sink = OtlpSink(f"{url}/v1/logs")
            try:
                with pytest.raises(MalformedError, match="belongs to the log"):
                    Exporter(LocalSource(log), sink, other, [signer.verifier]).run_once()
                sent = Exporter(LocalSource(log), sink, Cursor(path), [signer.verifier]).run_once()
            finally:
                sink.close()
        assert sent == 2
        assert sorted(receiver.stored) == [entry_uid(ORIGIN, i) for i in (3, 4)]
        assert Cursor(path).read() == (5, ORIGIN)
        path.write_text('{"next": -1, "origin": "x"}')
        with pytest.raises(MalformedError, match="damaged"):
            Cursor(path).read()


def test_an_ocsf_event_says_who_did_what_to_which_resource_and_how_it_ended() -> None:
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
    assert found["metadata"]["uid"] == f"{ORIGIN}#41"
    assert found["api"] == {"operation": "dataset.read", "request": {"uid": "req-1"}}
    assert found["unmapped"]["regsandbox"]["decision"]["codes"] == ["GRANT_MISSING"]
    assert found["unmapped"]["regsandbox"]["checkpoint"] == {"size": 42, "root": b64encode(cp.root)}
