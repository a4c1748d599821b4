"""Clients fail closed: anything but a confirmed durable append raises AuditUnavailable."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit.client import AuditClient, AuditRejected, AuditSink, AuditUnavailable, LocalAuditSink
from audit.entry import Event, encode_entry
from audit.errors import StorageError
from audit.log import AuditLog
from audit.note import Signer
from audit.proof import verify_tlog_proof
from audit.service import AccessPolicy, create_app, token_digest

ORIGIN = "audit.regsandbox.test/log"
TOKEN = "writer-token-abcdefabcdef"
Serve = Callable[..., Any]
MakeEvent = Callable[..., Event]


def open_policy() -> AccessPolicy:
    return AccessPolicy(writers={token_digest(TOKEN): "gateway"}, readers={})


def test_client_appends_and_proves_against_a_real_server(
    audit_log: AuditLog, signer: Signer, serve: Serve, event: MakeEvent
) -> None:
    with (
        serve(create_app(audit_log, open_policy())) as url,
        AuditClient(url, TOKEN, verifiers=[signer.verifier]) as client,
    ):
        sink: AuditSink = client
        events = [event(i) for i in range(4)]
        assert sink.append(events) == [0, 1, 2, 3]
        receipt = sink.prove(3)
        verify_tlog_proof(receipt, encode_entry(events[3], 3), [signer.verifier])
        assert sink.checkpoint() == audit_log.checkpoint_note
        assert client.entry(1) == encode_entry(events[1], 1)
        assert client.entries(0, 4) == [encode_entry(e, i) for i, e in enumerate(events)]
        assert len(client.consistency_proof(1, 4)) > 0
        assert client.inclusion_proof(0, 4)
        with pytest.raises(AuditRejected) as info:
            client.prove(99)
        assert info.value.status == 404


def test_connection_refused_raises(event: MakeEvent) -> None:
    import socket

    with socket.socket() as s:  # bind, don't listen: connecting is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        # A refused connection is an answer, not a time-out: it must not wait the minute.
        with AuditClient(f"http://127.0.0.1:{port}", TOKEN, timeout=60) as client:
            started = time.monotonic()
            with pytest.raises(AuditUnavailable, match="unreachable"):
                client.append([event()])
            assert time.monotonic() - started < 60
            with pytest.raises(AuditUnavailable):
                client.checkpoint()


def test_5xx_timeouts_and_bad_answers_raise(event: MakeEvent) -> None:
    def answer(status: int, payload: Any) -> httpx.MockTransport:
        return httpx.MockTransport(lambda request: httpx.Response(status, json=payload))

    cases = [
        answer(500, {"detail": "boom"}),
        answer(503, {"detail": "not durable"}),
        answer(202, {"indices": [0]}),  # accepted is not durable
        answer(200, {"indices": []}),  # not every event confirmed
        answer(200, {"indices": ["0"]}),
        answer(200, {"unexpected": True}),
        httpx.MockTransport(lambda request: httpx.Response(200, content=b"<html>")),
    ]

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    cases.append(httpx.MockTransport(timeout))
    for transport in cases:
        with (
            AuditClient("http://audit.invalid", TOKEN, transport=transport) as client,
            pytest.raises(AuditUnavailable),
        ):
            client.append([event()])
    rejected = AuditClient("http://audit.invalid", TOKEN, transport=answer(403, {"detail": "no"}))
    with pytest.raises(AuditRejected) as info:
        rejected.append([event()])
    assert info.value.status == 403
    assert isinstance(info.value, AuditUnavailable)
    assert TOKEN not in repr(rejected)


def test_client_refuses_a_checkpoint_from_the_wrong_key(audit_log: AuditLog, serve: Serve) -> None:
    stranger = Signer.generate(ORIGIN)
    with (
        serve(create_app(audit_log, open_policy())) as url,
        AuditClient(url, TOKEN, verifiers=[stranger.verifier]) as client,
        pytest.raises(AuditUnavailable, match="does not verify"),
    ):
        client.checkpoint()


def test_client_append_on_a_failing_log_raises(
    audit_log: AuditLog, serve: Serve, event: MakeEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(events: Any) -> list[int]:
        raise StorageError("disk full")

    monkeypatch.setattr(audit_log, "append_batch", fail)
    with (
        serve(create_app(audit_log, open_policy())) as url,
        AuditClient(url, TOKEN) as client,
        pytest.raises(AuditUnavailable, match="503"),
    ):
        client.append([event()])


def test_local_sink(tmp_path: Path, event: MakeEvent, monkeypatch: pytest.MonkeyPatch) -> None:
    signer = Signer.generate(ORIGIN)
    AuditLog.create(tmp_path / "log", ORIGIN, signer).close()
    with LocalAuditSink(tmp_path / "log", signer) as sink:
        as_protocol: AuditSink = sink
        events = [event(i) for i in range(3)]
        assert as_protocol.append(events) == [0, 1, 2]
        verify_tlog_proof(sink.prove(2), encode_entry(events[2], 2), [signer.verifier])
        assert b"\n3\n" in sink.checkpoint()
        with pytest.raises(AuditRejected):
            sink.prove(3)
        with pytest.raises(AuditUnavailable, match="cannot open"):
            LocalAuditSink(tmp_path / "log", signer)  # the writer lock is held
    reopened = LocalAuditSink(tmp_path / "log", signer)

    def broken(events: Any) -> list[int]:
        raise StorageError("the log stopped accepting appends after a write failure")

    monkeypatch.setattr(reopened.log, "append_batch", broken)
    with pytest.raises(AuditUnavailable):
        reopened.append([event()])
    reopened.close()
    with pytest.raises(AuditUnavailable):
        LocalAuditSink(tmp_path / "missing", signer)
