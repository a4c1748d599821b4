"""Request ids: one per request, in the answer, the audit entries and the gateway's logs.

Issue 19: "structured logs everywhere, with request ids that also appear in the audit
entries they caused". On the real control plane, a real MinIO and a real audit log, with
the gateway's logs captured as the shared set-up (:mod:`sandbox.logs`) renders them.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sandbox.logs import configure_logging

from .conftest import SwitchableSink, World

pytestmark = [pytest.mark.integration, pytest.mark.s3]


class Captured:
    """The JSON lines logged while a test runs."""

    def __init__(self, buffer: io.StringIO) -> None:
        self.buffer = buffer

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def wait_for(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = [line for line in self.lines() if wanted(line)]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no such log line in:\n{self.text}")


@pytest.fixture
def logs() -> Iterator[Captured]:
    """Everything logged, DEBUG and up, as JSON (the cluster's format)."""
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    try:
        yield Captured(buffer)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _read(url: str, token: str, request_id: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return httpx.get(url, headers=headers, timeout=30)


def test_a_read_carries_one_id_in_its_answer_its_audit_entry_and_its_log_lines(
    gateway_url: str, world: World, audit_sink: SwitchableSink, logs: Captured
) -> None:
    start = audit_sink.size
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/small.csv"
    r = _read(url, world.token("alpha"), "trace-7f3a.01")
    assert r.status_code == 200, r.text
    rid = r.headers["x-request-id"]
    assert len(rid) == 32
    assert int(rid, 16) >= 0
    assert r.headers["x-client-request-id"] == "trace-7f3a.01"

    (entry,) = audit_sink.entries_since(start)
    assert entry.action == "dataset.read"
    assert entry.request_id == rid
    assert entry.details["client_request_id"] == "trace-7f3a.01"

    line = logs.wait_for(lambda d: d.get("event") == "request" and d.get("request_id") == rid)
    assert line["client_request_id"] == "trace-7f3a.01"
    assert line["status"] == 200
    assert line["path"] == f"/v1/datasets/{world.claims}/objects/small.csv"
    assert line["logger"] == "regsandbox.gateway"


def test_a_refusal_is_logged_and_audited_under_the_id_it_answers_with(
    gateway_url: str, world: World, audit_sink: SwitchableSink, logs: Captured
) -> None:
    start = audit_sink.size
    r = _read(f"{gateway_url}/v1/datasets/{world.other}/objects/x", world.token("alpha"), "q-1")
    assert r.status_code == 403, r.text
    rid = r.headers["x-request-id"]
    assert r.json()["requestId"] == rid
    (entry,) = audit_sink.entries_since(start)
    assert (entry.outcome, entry.request_id) == ("denied", rid)
    refused = logs.wait_for(lambda d: d.get("event") == "refused" and d.get("request_id") == rid)
    assert refused["client_request_id"] == "q-1"


def test_a_client_cannot_choose_the_id_that_pairs_a_reads_records(
    gateway_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    # A workload reusing one id for two reads must not make them one read in the log:
    # the evidence check pairs a streamed read's started and completed records by id.
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/small.csv"
    start = audit_sink.size
    first = _read(url, world.token("alpha"), "same")
    second = _read(url, world.token("alpha"), "same")
    assert first.status_code == second.status_code == 200
    ids = [e.request_id for e in audit_sink.entries_since(start)]
    assert ids == [first.headers["x-request-id"], second.headers["x-request-id"]]
    assert ids[0] != ids[1]


@pytest.mark.parametrize(
    "sent", ["", "x" * 129, "has space", "-leading-dash", 'quote"d', "ünïcode".encode(), "a/b"]
)
def test_a_malformed_client_id_is_ignored(
    gateway_url: str, world: World, audit_sink: SwitchableSink, sent: str | bytes
) -> None:
    start = audit_sink.size
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/small.csv"
    headers: dict[str, str | bytes] = {
        "Authorization": f"Bearer {world.token('alpha')}",
        "X-Request-Id": sent,
    }
    r = httpx.get(url, headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    assert "x-client-request-id" not in r.headers
    (entry,) = audit_sink.entries_since(start)
    assert entry.request_id == r.headers["x-request-id"] != sent
    assert "client_request_id" not in entry.details


def test_no_token_reaches_the_logs_even_at_debug(
    gateway_url: str, world: World, logs: Captured
) -> None:
    # A real flow at DEBUG: TokenReviews (whose bodies echo the token), an allowed read,
    # a token the API server rejects, a malformed request, an outbox write.
    good = world.token("alpha")
    forged = "eyJhbGciOiJSUzI1NiJ9.forged-token-7c1d9e.signature"
    base = f"{gateway_url}/v1/datasets/{world.claims}/objects"
    assert _read(f"{base}/small.csv", good).status_code == 200
    assert _read(f"{base}/small.csv", forged).status_code == 401
    assert _read(f"{base}?limit=0", good).status_code == 422
    put = httpx.put(
        f"{gateway_url}/v1/outbox/log-test/model.bin",
        content=b"weights",
        headers={"Authorization": f"Bearer {good}", "Cookie": "session=cookie-4411"},
        timeout=30,
    )
    assert put.status_code in (201, 409, 503), put.text
    logs.wait_for(lambda d: d.get("event") == "request" and d.get("method") == "PUT")
    assert logs.lines(), "nothing was logged"
    for secret in (good, forged, good.split(".")[1], "cookie-4411"):
        assert secret not in logs.text
