"""The read server (issue 16: reads never slow appends): reads in a process of their own.

What must hold, from the issue and the design (``audit serve --read-listen``):

- the read server serves the same bytes, proofs and receipts as the writer's listener,
  from the durable files as of the checkpoint the writer published, and a new entry
  becomes readable there once a checkpoint covering it is published;
- with a read port, the append port refuses readers (so no reader bypasses the read
  server's lower priority and rate), naming the read port, while writers keep reading
  their receipts and appending;
- one reader past its rate gets 429 with Retry-After; another reader still reads;
- a read server that dies or hangs is detected and restarted (``ReadsServed``, the
  ``regsandbox_audit_read_server_*`` metrics), and appends go on meanwhile.

Real servers throughout: uvicorn on loopback, and ``sandboxctl audit serve`` as a
process for the restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import typer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from audit.client import AuditClient
from audit.entry import Actor, Event, Resource
from audit.log import AuditLog
from audit.note import Signer
from audit.proof import TlogProof, verify_tlog_proof
from audit.read_server import PublishedLog, ReaderRates, ReadServerProcess, create_read_app
from audit.remote import RemoteLog
from audit.service import AccessPolicy, create_app, token_digest
from audit.signing import generate_key_file
from sandbox.cli.audit_serve import register
from sandbox.devenv.processes import free_port
from tests.audit_service.conftest import ORIGIN, Serve, wait_for
from tests.servers import stop_process

WRITER = "read-server-writer-token"
READER = "read-server-reader-token"
OTHER = "read-server-other-reader"
MakeEvent = Callable[..., Event]


def _policy(**more: object) -> AccessPolicy:
    return AccessPolicy(
        writers={token_digest(WRITER): "operator"},
        readers={token_digest(READER): "auditor", token_digest(OTHER): "siem"},
        **more,  # type: ignore[arg-type]
    )


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tenant_event(tenant: str, n: int) -> Event:
    return Event(
        actor=Actor(service_account=f"sbx-{tenant}/w"),
        action="dataset.read",
        resource=Resource(kind="Dataset", name=f"d-{n}", tenant=tenant),
        outcome="success",
        details={"n": n},
    )


@pytest.fixture
def filled(tmp_path: Path, signer: Signer) -> AuditLog:
    """A log of 600 entries of two tenants, all published, checkpointing only on demand."""
    log = AuditLog.create(tmp_path / "log", ORIGIN, signer, checkpoint_interval=3600)
    log.append_batch([_tenant_event("acme" if n % 3 else "bank", n) for n in range(600)])
    log.publish_checkpoint()
    return log


READS = [
    "/v1/checkpoint",
    "/v1/entries/0",
    "/v1/entries/599",
    "/v1/entries?start=0&end=600",
    "/v1/entries?start=17&end=18",
    "/v1/proof/inclusion?index=5",
    "/v1/proof/inclusion?index=5&size=300",
    "/v1/proof/consistency?old=1",
    "/v1/proof/consistency?old=257&new=599",
    "/v1/receipt/123",
    "/v1/tenants/acme/checkpoint",
    "/v1/tenants/acme/entries?start=0&limit=50",
    "/v1/tenants/bank/entries?start=300&limit=1000",
    "/v1/tenants/acme/entries/1",
    "/v1/tenants/acme/proof/inclusion?index=1",
    "/v1/tenants/acme/proof/consistency?old=3",
    "/v1/tenants/acme/receipt/2",
    "/tlog/checkpoint",
    "/tlog/tile/0/000",
    "/tlog/tile/0/002.p/88",
    "/tlog/tile/1/000.p/2",
    "/tlog/tile/entries/000",
    "/tlog/tile/entries/002.p/88",
    # refused alike
    "/v1/tenants/acme/entries/0",
    "/v1/entries/600",
    "/tlog/tile/0/003",
]


def test_the_read_server_answers_every_read_with_the_writers_bytes(
    filled: AuditLog, serve: Serve
) -> None:
    published = PublishedLog(filled.path)
    try:
        with (
            serve(create_app(filled, _policy())) as writer,
            serve(create_read_app(published, _policy())) as reader,
        ):
            for path in READS:
                want = httpx.get(writer + path, headers=_auth(READER), timeout=30)
                got = httpx.get(reader + path, headers=_auth(READER), timeout=30)
                assert (got.status_code, got.content) == (want.status_code, want.content), path
            assert httpx.get(reader + "/v1/checkpoint").status_code == 401
            console = httpx.get(reader + "/console/log/entries", headers=_auth(READER))
            assert console.status_code == 200
            assert "default-src 'self'" in console.headers["content-security-policy"]
    finally:
        published.close()
        filled.close()


def test_a_new_entry_is_readable_on_the_read_server_once_its_checkpoint_is_published(
    filled: AuditLog, serve: Serve, signer: Signer
) -> None:
    published = PublishedLog(filled.path)
    try:
        with serve(create_read_app(published, _policy())) as reader:
            [index] = filled.append_batch([_tenant_event("acme", 1000)])
            assert index == 600
            before = httpx.get(f"{reader}/v1/entries/{index}", headers=_auth(READER))
            assert before.status_code == 404  # durable, not yet in a published checkpoint
            filled.publish_checkpoint()
            after = httpx.get(f"{reader}/v1/entries/{index}", headers=_auth(READER))
            assert after.status_code == 200
            assert after.content == filled.entry_bytes(index)
            receipt = httpx.get(f"{reader}/v1/receipt/{index}", headers=_auth(READER))
            verify_tlog_proof(TlogProof.parse(receipt.content), after.content, [signer.verifier])
    finally:
        published.close()
        filled.close()


def test_with_a_read_port_the_append_port_refuses_readers_naming_it(
    filled: AuditLog, serve: Serve, event: MakeEvent
) -> None:
    try:
        app = create_app(filled, _policy(reads_at="port 8081", open_reads=True))
        with serve(app) as url:
            for headers in (_auth(READER), {}, _auth("not-a-token")):
                for path in ("/v1/checkpoint", "/v1/entries?start=0&end=10", "/tlog/checkpoint"):
                    answer = httpx.get(url + path, headers=headers)
                    assert answer.status_code == 403, (path, answer.text)
                    assert "read server (port 8081)" in answer.json()["detail"]
            console = httpx.get(f"{url}/console/", follow_redirects=False)
            assert console.status_code == 404
            assert "read server (port 8081)" in console.text
            # writers keep appending and reading their receipts here
            with AuditClient(url, WRITER, verifiers=[filled.signers[0].verifier]) as client:
                [index] = client.append([event(1)])
                assert client.prove(index).startswith(b"c2sp.org/tlog-proof@v1\n")
            assert httpx.get(f"{url}/v1/status").status_code == 200
    finally:
        filled.close()


def test_a_reader_past_its_rate_gets_429_and_another_reader_still_reads(
    filled: AuditLog, serve: Serve
) -> None:
    published = PublishedLog(filled.path)
    rates = ReaderRates(rate=100, burst=1000)
    try:
        with serve(create_read_app(published, _policy(), rates=rates)) as reader:
            first = httpx.get(f"{reader}/v1/entries?start=0&end=600", headers=_auth(READER))
            assert first.status_code == 200
            again = httpx.get(f"{reader}/v1/entries?start=0&end=600", headers=_auth(READER))
            assert again.status_code == 429
            assert int(again.headers["retry-after"]) >= 1
            assert "auditor" in again.json()["detail"]
            other = httpx.get(f"{reader}/v1/entries?start=0&end=600", headers=_auth(OTHER))
            assert other.status_code == 200
            metrics = httpx.get(f"{reader}/metrics").text
            assert "regsandbox_audit_read_rate_limited_total 1.0" in metrics
            assert 'regsandbox_audit_read_http_requests_total{code="429"' in metrics
    finally:
        published.close()
        filled.close()


def test_reader_rates_refill_at_the_rate_and_never_hold_more_than_the_burst() -> None:
    now = [0.0]
    rates = ReaderRates(rate=1000, burst=2000, clock=lambda: now[0])
    assert rates.take("a", 2000) == 0
    assert rates.take("a", 500) == pytest.approx(0.5)  # refused: nothing taken
    now[0] = 0.5
    assert rates.take("a", 500) == 0
    assert rates.take("b", 5000) == 0  # a cost over the burst costs the burst
    now[0] = 100.0
    assert rates.take("a", 2000) == 0
    assert rates.take("a", 1) > 0
    assert ReaderRates(rate=0, burst=1).take("a", 10**9) == 0  # no bound
    rates.spend("c", 5000)  # read already (a console search): the bucket goes below empty
    assert rates.take("c", 1) == pytest.approx(3.001)  # 3,000 to refill, then 1


_HEALTHY = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_a_hung_read_server_is_killed_and_started_again() -> None:
    port = free_port()
    registry = CollectorRegistry()
    process = ReadServerProcess(
        [sys.executable, "-c", _HEALTHY, str(port)],
        f"http://127.0.0.1:{port}/healthz",
        registry,
        probe_interval=0.1,
        probe_timeout=0.3,
    )
    process.start()
    try:
        wait_for(lambda: process.serving, "the read server to answer")
        hung = process.pid
        assert hung is not None
        os.kill(hung, signal.SIGSTOP)
        wait_for(lambda: not process.serving, "the hang to be noticed")
        assert process.condition()["status"] == "False"
        assert "health checks" in process.condition()["message"]
        wait_for(lambda: process.serving and process.pid != hung, "a new read server")
        assert registry.get_sample_value("regsandbox_audit_read_server_restarts_total") == 1
        assert registry.get_sample_value("regsandbox_audit_read_server_up") == 1
    finally:
        process.stop()
    assert process.pid is None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _reads_served(url: str) -> bool:
    status = httpx.get(f"{url}/v1/status", timeout=2).json()
    return any(c["type"] == "ReadsServed" and c["status"] == "True" for c in status["conditions"])


def test_audit_serve_with_a_read_port_restarts_a_killed_read_server(
    tmp_path: Path, event: MakeEvent
) -> None:
    key = tmp_path / "log.key"
    signer = generate_key_file(key, ORIGIN)
    AuditLog.create(tmp_path / "log", ORIGIN, signer).close()
    (tmp_path / "writers").write_text(f"{token_digest(WRITER)} operator\n")
    (tmp_path / "readers").write_text(f"{token_digest(READER)} auditor\n")
    port, read_port = free_port(), free_port()
    url, reads = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{read_port}"
    out = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [
            *(
                sys.executable,
                "-m",
                "sandbox.cli",
                "audit",
                "serve",
                "--log",
                str(tmp_path / "log"),
            ),
            *("--key", str(key), "--writers", str(tmp_path / "writers")),
            *("--readers", str(tmp_path / "readers"), "--listen", f"127.0.0.1:{port}"),
            *("--read-listen", f"127.0.0.1:{read_port}"),
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _reads_served(url), "the read server to be up")
        [child] = _children(server.pid)
        assert os.sched_getscheduler(child) == os.SCHED_IDLE  # --read-idle, the default
        assert os.getpriority(os.PRIO_PROCESS, child) >= os.getpriority(
            os.PRIO_PROCESS, server.pid
        ) + min(10, 19 - os.getpriority(os.PRIO_PROCESS, server.pid))
        with AuditClient(url, WRITER, verifiers=[signer.verifier]) as client:
            [first] = client.append([event(1)])
            client.prove(first)  # publishes a checkpoint covering it
            wait_for(
                lambda: (
                    httpx.get(f"{reads}/v1/entries/{first}", headers=_auth(READER)).status_code
                    == 200
                ),
                "the entry on the read port",
            )
            refused = httpx.get(f"{url}/v1/entries/{first}", headers=_auth(READER))
            assert refused.status_code == 403
            assert f"port {read_port}" in refused.text

            os.kill(child, signal.SIGKILL)
            wait_for(
                lambda: (
                    "regsandbox_audit_read_server_restarts_total 1.0"
                    in httpx.get(f"{url}/metrics").text
                ),
                "the restart to be counted",
            )
            [second] = client.append([event(2)])  # appends go on whatever reads do
            client.prove(second)
            wait_for(lambda: _reads_served(url), "the read server to be back")
            assert _children(server.pid) != [child]
            again = httpx.get(f"{reads}/v1/entries/{second}", headers=_auth(READER))
            assert again.status_code == 200
            merged = httpx.get(f"{url}/metrics").text
            families = {f.name for f in text_string_to_metric_families(merged)}  # one scrape
            assert {"regsandbox_audit_http_requests", "regsandbox_audit_read_http_requests"} <= (
                families
            )
            assert "regsandbox_audit_read_server_up 1.0" in merged
    finally:
        stop_process(server)
        out.close()
    assert READER not in (tmp_path / "server.log").read_text()


def test_the_remote_reader_waits_out_its_rate_and_reads_the_whole_log(
    filled: AuditLog, serve: Serve, signer: Signer
) -> None:
    published = PublishedLog(filled.path)
    rates = ReaderRates(rate=200, burst=1000)
    try:
        with serve(create_read_app(published, _policy(), rates=rates)) as reader:
            with RemoteLog(reader, READER, [signer.verifier]) as remote:
                assert len(list(remote.entries())) == 600  # 1 + 600 of a 1,000 burst
                # the bucket is nearly empty now: the next full read waits, then passes
                again = [index for index, _ in remote.entries()]
            assert again == list(range(600))
            metrics = httpx.get(f"{reader}/metrics").text
            assert "regsandbox_audit_read_rate_limited_total 0.0" not in metrics
    finally:
        published.close()
        filled.close()


_UNHEALTHY = _HEALTHY.replace("send_response(200)", "send_response(503)")


def test_a_read_server_that_answers_unhealthy_is_shown_not_restarted() -> None:
    """Unhealthy but answering (e.g. it refuses a rolled-back checkpoint file): a restart
    would forget what it refused, so it is left running and shown as unhealthy."""
    port = free_port()
    registry = CollectorRegistry()
    process = ReadServerProcess(
        [sys.executable, "-c", _UNHEALTHY, str(port)],
        f"http://127.0.0.1:{port}/healthz",
        registry,
        probe_interval=0.05,
        probe_timeout=0.5,
        startup_timeout=2.0,
    )
    process.start()
    try:
        wait_for(
            lambda: process.condition()["reason"] == "ReadServerUnhealthy",
            "the unhealthy answer to show",
        )
        first = process.pid
        assert "503" in process.condition()["message"]
        wait_for(lambda: registry.get_sample_value("regsandbox_audit_read_server_up") == 0, "0")
        deadline = time.monotonic() + 2.5  # past the startup timeout: still the same child
        while time.monotonic() < deadline:
            assert process.pid == first
            time.sleep(0.05)
        assert registry.get_sample_value("regsandbox_audit_read_server_restarts_total") == 0
    finally:
        process.stop()


def test_anonymous_readers_each_have_a_bucket_of_their_own(filled: AuditLog, serve: Serve) -> None:
    """With open reads, every client is "anonymous": one of them paging at full speed
    must not use up the rate of every other public mirror or witness."""
    published = PublishedLog(filled.path)
    rates = ReaderRates(rate=1, burst=1000)
    try:
        with serve(create_read_app(published, _policy(open_reads=True), rates=rates)) as url:
            path = f"{url}/v1/entries?start=0&end=600"
            assert httpx.get(path).status_code == 200
            assert httpx.get(path).status_code == 429
            other = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(transport=other) as elsewhere:
                assert elsewhere.get(path).status_code == 200
    finally:
        published.close()
        filled.close()


def test_a_read_port_that_is_another_listeners_is_a_usage_error(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    base = ["serve", "--log", str(tmp_path), "--writers", "w", "--listen", "127.0.0.1:8080"]
    same = CliRunner().invoke(app, [*base, "--read-listen", "0.0.0.0:8080"])
    assert same.exit_code == 2
    assert "port of its own" in same.output
