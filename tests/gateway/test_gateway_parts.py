"""The Gateway's parts, each tested alone (no HTTP server): refusal, admission, write
slots and audited streaming.

Against the real session audit log, control plane and MinIO; only the ASGI ``send`` and
``receive`` of a streamed answer are played by the test, as a server would call them.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from sandbox.api.dataset import DatasetLocation
from sandbox.devenv.minio import MinioServer
from sandbox.gateway import Gateway
from sandbox.gateway.authz import Forbidden, SandboxRef
from sandbox.gateway.objectkeys import InvalidKey
from sandbox.gateway.outbox import TooManyWrites
from sandbox.gateway.records import RequestRecord
from sandbox.gateway.s3 import ObjectStream, RangeNotSatisfiable, Storage
from sandbox.gateway.streaming import AuditedStream, StreamAborted

from .conftest import BUCKET, SwitchableSink, World

REF = SandboxRef("bank", "fraud", "sbx-bank-fraud")


def _alone(audit: SwitchableSink) -> Gateway:
    """A gateway with only its audit log: what refusals and write slots need."""
    return Gateway(reviewer=None, grants=None, storage=None, audit=audit)  # type: ignore[arg-type]


def _record() -> RequestRecord:
    return RequestRecord("dataset.read", "GET", "claims", key="2024/a.csv")


# -- refusal --------------------------------------------------------------------------


def test_a_refusal_is_durable_before_it_is_answered(audit_sink: SwitchableSink) -> None:
    gw, record = _alone(audit_sink), _record()
    record.sandbox = REF
    start = audit_sink.size
    answer = anyio.run(gw.refuse, record, Forbidden("DatasetNotGranted", "not granted", REF))
    assert answer.status_code == 403
    assert json.loads(bytes(answer.body)) == {
        "detail": "not granted",
        "reason": "DatasetNotGranted",
        "requestId": record.request_id,
    }
    assert answer.headers["x-request-id"] == record.request_id
    (entry,) = audit_sink.entries_since(start)
    assert (entry.outcome, entry.details["phase"], entry.details["status"]) == (
        "denied",
        "refused",
        403,
    )
    assert entry.decision is not None
    assert entry.decision.codes == ("DatasetNotGranted",)
    assert entry.resource.sandbox == "fraud"


def test_a_refusal_the_audit_log_refuses_is_503_and_nothing_else(
    audit_failing: SwitchableSink,
) -> None:
    gw = _alone(audit_failing)
    audit_failing.fail_after = 0
    start = audit_failing.size
    answer = anyio.run(gw.refuse, _record(), InvalidKey("bad key"))
    assert answer.status_code == 503
    assert json.loads(bytes(answer.body))["reason"] == "AuditUnavailable"
    assert audit_failing.size == start


def test_refusals_carry_what_the_client_needs_and_bugs_are_not_refusals(
    audit_sink: SwitchableSink,
) -> None:
    gw = _alone(audit_sink)
    busy = anyio.run(gw.refuse, _record(), TooManyWrites("busy"))
    assert (busy.status_code, busy.headers["retry-after"]) == (429, "5")
    start = audit_sink.size
    beyond = anyio.run(gw.refuse, _record(), RangeNotSatisfiable("beyond", size=10))
    assert (beyond.status_code, beyond.headers["content-range"]) == (416, "bytes */10")
    (entry,) = audit_sink.entries_since(start)
    assert entry.details["object_size"] == 10
    with pytest.raises(ValueError, match="a bug"):
        anyio.run(gw.refuse, _record(), ValueError("a bug"))


# -- write slots ----------------------------------------------------------------------


def test_write_slots_are_bounded_and_always_given_back(audit_sink: SwitchableSink) -> None:
    gw = _alone(audit_sink)
    gw.outbox_max_writes = 2
    with gw.write_slot(), gw.write_slot():
        assert gw.writes_under_way == 2
        with pytest.raises(TooManyWrites), gw.write_slot():
            pass
        assert gw.writes_under_way == 2  # a refused write takes no slot
    with pytest.raises(RuntimeError), gw.write_slot():
        raise RuntimeError("the upload failed")
    assert gw.writes_under_way == 0


# -- admission ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.s3
@pytest.mark.parametrize(
    ("who", "reason"), [("old", "SandboxExpired"), ("idle", "SandboxNotReady")]
)
def test_reads_and_writes_are_admitted_by_one_step(
    gateway: Gateway, world: World, who: str, reason: str
) -> None:
    read = RequestRecord("dataset.read", "GET", world.claims, key="small.csv")
    with pytest.raises(Forbidden) as refused_read:
        anyio.run(gateway.admit_read, read, b"/v1/datasets", world.token(who))
    write = RequestRecord("model.artifact.written", "PUT", "m.bin", kind="ModelArtifact")

    async def admit_write() -> None:
        identity = await gateway.authenticate(write, b"/v1/outbox/m.bin", world.token(who))
        await gateway.active_sandbox(write, identity)

    with pytest.raises(Forbidden) as refused_write:
        anyio.run(admit_write)
    assert refused_read.value.reason == refused_write.value.reason == reason
    assert read.sandbox is not None
    assert read.sandbox == write.sandbox
    assert read.sandbox.sandbox == who
    # The same sandbox, allowed, is admitted for the dataset it was granted.
    allowed = RequestRecord("dataset.read", "GET", world.claims, key="small.csv")
    grant = anyio.run(gateway.admit_read, allowed, b"/v1/datasets", world.token("alpha"))
    assert grant.sandbox == allowed.sandbox
    assert grant.dataset == world.claims


# -- audited streaming ----------------------------------------------------------------


def _stream(s3: MinioServer, data: bytes) -> ObjectStream:
    """A real S3 object stream of ``data``."""
    key = f"parts/{hashlib.sha256(data).hexdigest()[:16]}.bin"
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=data)
    storage = Storage(
        SecretStr(s3.access_key), SecretStr(s3.secret_key), allowed_endpoints=[s3.endpoint]
    )
    location = DatasetLocation(bucket=BUCKET, prefix="", region="us-east-1", endpoint=s3.endpoint)
    return storage.open(location, key, None)


def _play(
    response: AuditedStream, *, client_leaves: bool = False
) -> tuple[list[dict[str, Any]], bool]:
    """Call ``response`` as an ASGI server would; the messages sent and whether it aborted."""
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        if not client_leaves:
            await anyio.sleep_forever()
        return {"type": "http.disconnect"}

    aborted = False
    try:
        anyio.run(response, {"type": "http"}, receive, send)
    except* StreamAborted:
        aborted = True
    return sent, aborted


@pytest.mark.s3
def test_an_audited_stream_sends_the_last_chunk_only_after_its_record(
    s3: MinioServer, audit_sink: SwitchableSink
) -> None:
    data = os.urandom(3 * 64 * 1024 + 5)
    record = _record()
    start = audit_sink.size
    response = AuditedStream(
        audit_sink, record, _stream(s3, data), {}, 200, whole=True, chunk_bytes=64 * 1024
    )
    sent, aborted = _play(response)
    assert not aborted
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert b"".join(m["body"] for m in bodies) == data
    assert [m["more_body"] for m in bodies] == [True, True, True, False]
    (entry,) = audit_sink.entries_since(start)
    assert entry.details["phase"] == "completed"
    assert entry.details["bytes"] == len(data)
    assert entry.details["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.s3
def test_an_audited_stream_whose_record_is_refused_never_completes(
    s3: MinioServer, audit_failing: SwitchableSink
) -> None:
    data = os.urandom(2 * 64 * 1024 + 1)
    response = AuditedStream(
        audit_failing, _record(), _stream(s3, data), {}, 200, whole=True, chunk_bytes=64 * 1024
    )
    audit_failing.fail_after = 0
    sent, aborted = _play(response)
    assert aborted
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert sum(len(m["body"]) for m in bodies) < len(data)
    assert all(m["more_body"] for m in bodies)


@pytest.mark.s3
def test_an_audited_stream_records_a_client_that_left(
    s3: MinioServer, audit_sink: SwitchableSink
) -> None:
    data = os.urandom(4 * 64 * 1024)
    start = audit_sink.size
    response = AuditedStream(
        audit_sink, _record(), _stream(s3, data), {}, 200, whole=True, chunk_bytes=64 * 1024
    )
    sent, aborted = _play(response, client_leaves=True)
    assert not aborted
    assert all(m.get("more_body", True) for m in sent)  # never a complete body
    (entry,) = audit_sink.entries_since(start)
    assert (entry.outcome, entry.details["reason"]) == ("failure", "ClientDisconnected")
    assert entry.details["bytes"] < len(data)
    assert "sha256" not in entry.details
