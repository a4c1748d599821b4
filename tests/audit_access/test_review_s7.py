"""Attacker-minded review of the audit read server (session 7), as tests.

Each test states what an attacker (or an accident) does and what the read server must
do. Each failed on the read server as first committed (findings:
``/work/helpers/reports/s7/review.md``); all are fixed and these tests guard the fixes.
Real servers: uvicorn on loopback over a real log directory (in-process ASGI only to send
from other client addresses), and ``audit serve --read-listen`` as a process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from audit.durable import replace_file
from audit.entry import Actor, Event, Resource
from audit.log import CHECKPOINT_FILE, ENTRIES_FILE, AuditLog
from audit.note import Signer
from audit.read_server import (
    PublishedLog,
    ReaderRates,
    create_read_app,
    read_server_environment,
)
from audit.service import AccessPolicy, ServiceMetrics, create_app, token_digest
from audit.signing import generate_key_file
from sandbox.devenv.processes import free_port
from tests.audit_service.conftest import wait_for
from tests.servers import serve_app, stop_process

ORIGIN = "audit.regsandbox.test/review"
READER = "review-reader-token"
OTHER = "review-other-reader-token"


def _policy() -> AccessPolicy:
    return AccessPolicy(
        writers={}, readers={token_digest(READER): "auditor", token_digest(OTHER): "other"}
    )


def _auth(token: str = READER) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _event(n: int) -> Event:
    return Event(
        actor=Actor(service_account="sbx-acme-a/w"),
        action="dataset.read",
        resource=Resource(kind="Dataset", name=f"d-{n}", tenant="acme"),
        outcome="success",
        details={"n": n},
    )


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    """A log checkpointing only on demand (so the test decides what is published)."""
    opened = AuditLog.create(
        tmp_path / "log", ORIGIN, Signer.generate(ORIGIN), checkpoint_interval=3600
    )
    try:
        yield opened
    finally:
        opened.close()


def _size(note: bytes) -> int:
    return int(note.split(b"\n")[1])


def test_a_checkpoint_file_rolled_back_to_an_older_tree_is_not_served(log: AuditLog) -> None:
    """Someone with write access to the volume (or a careless restore of one file)
    puts back an older signed checkpoint: readers would be shown a log that shrank —
    the newest entries (the ones an insider most wants hidden) vanish from every read,
    the console and the tiles. The read server has seen the larger tree; it must refuse
    to serve the smaller one (503, and /healthz says so) rather than go back."""
    log.append_batch([_event(n) for n in range(10)])
    old = log.publish_checkpoint()
    log.append_batch([_event(n) for n in range(10, 20)])
    log.publish_checkpoint()
    published = PublishedLog(log.path)
    try:
        with serve_app(create_read_app(published, _policy())) as url:
            first = httpx.get(f"{url}/v1/checkpoint", headers=_auth())
            assert _size(first.content) == 20
            replace_file(log.path / CHECKPOINT_FILE, old)  # atomically, as the writer does
            after = httpx.get(f"{url}/v1/checkpoint", headers=_auth())
            entry = httpx.get(f"{url}/v1/entries/15", headers=_auth())
            health = httpx.get(f"{url}/healthz")
            assert after.status_code == 503, after.text  # today: 200, the size-10 note
            assert entry.status_code == 503, entry.text  # today: 404 ("no entry 15")
            assert health.status_code == 503
    finally:
        published.close()


def test_console_searches_are_charged_for_the_entries_they_read(log: AuditLog) -> None:
    """A reader whose API reads are bounded to ``burst`` entries pages through the log
    via the console instead: a search with a filter that matches nothing reads every
    entry of the log (up to the console's 5,000-entry budget) per page. Five such pages
    read 15,000 entries with a bucket of 1,000 and (nearly) no refill: at least one
    must be refused with 429, as the same reads through /v1/entries are."""
    log.append_batch([_event(n) for n in range(3000)])
    log.publish_checkpoint()
    published = PublishedLog(log.path)
    rates = ReaderRates(rate=0.001, burst=1000)
    try:
        with serve_app(create_read_app(published, _policy(), rates=rates)) as url:
            api = [
                httpx.get(f"{url}/v1/entries?start={s}&end={s + 1000}", headers=_auth())
                for s in (0, 1000)
            ]
            assert [a.status_code for a in api] == [200, 429]  # the API read is bounded
            pages = [  # another reader, with a full bucket
                httpx.get(
                    f"{url}/console/log/entries?actor=nobody-at-all",
                    headers=_auth(OTHER),
                    timeout=60,
                )
                for _ in range(5)
            ]
            codes = [p.status_code for p in pages]
            assert 429 in codes, codes  # today: five 200s, 15,000 entries read
    finally:
        published.close()


def test_the_read_server_never_serves_past_the_published_checkpoint(log: AuditLog) -> None:
    """Entries that are durable but not yet in a checkpoint (the writer appends between
    its checkpoints) are invisible on every read route, tiles and tenant routes included;
    and an entry file torn past the checkpoint does not break reads of what it covers."""
    log.append_batch([_event(n) for n in range(300)])
    log.publish_checkpoint()
    log.append_batch([_event(n) for n in range(300, 600)])  # durable, not published
    with (log.path / ENTRIES_FILE).open("ab") as entries:
        entries.write(b"\x00\x00\x01\x00torn")  # a crashed writer's partial record
    published = PublishedLog(log.path)
    try:
        with serve_app(create_read_app(published, _policy())) as url:
            for path in (
                "/v1/entries/300",
                "/v1/entries?start=299&end=301",
                "/v1/receipt/300",
                "/v1/proof/inclusion?index=300",
                "/v1/proof/consistency?old=1&new=301",
                "/v1/tenants/acme/entries/300",
                "/v1/tenants/acme/receipt/300",
                "/tlog/tile/entries/001",
                "/tlog/tile/0/001",
                "/tlog/tile/entries/001.p/45",
            ):
                answer = httpx.get(url + path, headers=_auth())
                assert answer.status_code == 404, (path, answer.status_code)
            listed = httpx.get(
                f"{url}/v1/tenants/acme/entries?start=250&limit=100", headers=_auth()
            )
            assert listed.status_code == 200
            assert max(e["index"] for e in listed.json()["entries"]) == 299
            console = httpx.get(f"{url}/console/log/entries/300", headers=_auth())
            assert console.status_code == 404
            assert httpx.get(f"{url}/v1/entries/299", headers=_auth()).status_code == 200
    finally:
        published.close()


def test_status_on_the_read_port_does_not_pass_each_request_to_the_writer(log: AuditLog) -> None:
    """The NetworkPolicy lets readers reach the read port only, and the read server
    exists so that readers never slow appends. ``/v1/status`` needs no token; on the
    read port it is answered by asking the writer. A client (no credential at all)
    polling it 40 times must not cause 40 requests on the writer's listener: the read
    server answers from a recent copy (at most about one writer request a second)."""
    registry = CollectorRegistry()
    writer_app = create_app(log, _policy(), metrics=ServiceMetrics(registry))
    published = PublishedLog(log.path)
    try:
        with serve_app(writer_app) as writer:

            def writer_status() -> tuple[int, bytes]:  # what `audit serve-reads` does
                answer = httpx.get(f"{writer}/v1/status", timeout=2.0)
                return answer.status_code, answer.content

            app = create_read_app(published, _policy(), writer_status=writer_status)
            with serve_app(app) as reads, httpx.Client(base_url=reads) as client:
                for _ in range(40):
                    assert client.get("/v1/status").status_code == 200
            asked = registry.get_sample_value(
                "regsandbox_audit_http_requests_total",
                {"route": "/v1/status", "method": "GET", "code": "200"},
            )
            assert asked is not None
            assert asked <= 5, f"the writer answered {asked:.0f} of 40"
    finally:
        published.close()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def test_the_read_server_does_not_hold_the_archives_credentials(tmp_path: Path) -> None:
    """The chart gives the audit container the archive bucket's S3 credentials in its
    environment (``audit.archive.credentialsSecret``): the writer needs them to archive.
    The read server — the process that parses every reader's requests, the console's
    forms and TLS — needs none of them, so it must not hold them: a flaw there would
    otherwise hand out write access to the evidence archive."""
    key = tmp_path / "log.key"
    signer = generate_key_file(key, ORIGIN)
    AuditLog.create(tmp_path / "log", ORIGIN, signer).close()
    (tmp_path / "readers").write_text(f"{token_digest(READER)} auditor\n")
    (tmp_path / "writers").write_text(f"{token_digest('review-writer')} operator\n")
    port, read_port = free_port(), free_port()
    secret = "review-s7-archive-secret-" + os.urandom(8).hex()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "review-s7", "AWS_SECRET_ACCESS_KEY": secret}
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "sandbox.cli", "audit", "serve"),
            *("--log", str(tmp_path / "log"), "--key", str(key)),
            *("--writers", str(tmp_path / "writers"), "--readers", str(tmp_path / "readers")),
            *("--listen", f"127.0.0.1:{port}", "--read-listen", f"127.0.0.1:{read_port}"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{read_port}/healthz").status_code == 200,
            "the read server",
        )
        [child] = _children(server.pid)
        environ = Path(f"/proc/{child}/environ").read_bytes()
        assert secret.encode() not in environ
        assert b"AWS_SECRET_ACCESS_KEY=" not in environ
    finally:
        stop_process(server)


def test_an_anonymous_reader_cannot_renew_its_bucket_by_changing_its_ipv6_address(
    log: AuditLog,
) -> None:
    """With open reads, anonymous readers are charged per client address. A host is
    routed a whole IPv6 /64 and can send each request from another address of it: five
    requests of 1,000 entries from one /64 against a bucket of 1,000 with (nearly) no
    refill must meet a 429, as five from one IPv4 address do."""
    log.append_batch([_event(n) for n in range(1000)])
    log.publish_checkpoint()
    published = PublishedLog(log.path)
    policy = AccessPolicy(writers={}, readers={}, open_reads=True)
    app = create_read_app(published, policy, rates=ReaderRates(rate=0.001, burst=1000))

    async def read_from(address: str) -> int:
        transport = httpx.ASGITransport(app=app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://reads") as client:
            answer = await client.get("/v1/entries?start=0&end=1000")
            return answer.status_code

    async def five(addresses: list[str]) -> list[int]:
        return [await read_from(a) for a in addresses]

    try:
        ipv4 = asyncio.run(five(["192.0.2.7"] * 5))
        assert 429 in ipv4  # the bound holds for one address
        ipv6 = asyncio.run(five([f"2001:db8:1:2::{n:x}" for n in range(1, 6)]))
        assert 429 in ipv6, ipv6  # before a fix: five 200s
    finally:
        published.close()


def test_the_read_server_keeps_the_proxy_settings_its_kubernetes_client_reads() -> None:
    """The Kubernetes client the read server authorises readers with takes the API
    server's proxy from ``HTTPS_PROXY`` / ``https_proxy`` (kubernetes.client.Configuration).
    Where the platform reaches its API server through a proxy, a read server without
    them can ask no TokenReview: every Kubernetes reader gets 503."""
    proxies = {"HTTPS_PROXY": "http://proxy:3128", "https_proxy": "http://proxy:3128"}
    kept = read_server_environment({**proxies, "AWS_SECRET_ACCESS_KEY": "x", "PATH": "/bin"})
    assert kept == {**proxies, "PATH": "/bin"}
