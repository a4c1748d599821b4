"""``sandboxctl evidence pack --server URL``: a pack made from a running audit service's
tenant read API is the pack made from the log itself, verifies, and a service that
serves an altered entry is refused before anything is written."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from audit.errors import VerificationError
from audit.log import AuditLog
from audit.signing import generate_key_file, write_vkey_file
from sandbox.evidence.collect import Scope
from sandbox.evidence.remote import collect_from_server
from tests.evidence.cli import run
from tests.evidence.history import History, compliant
from tests.real_audit import RealAuditService

ORIGIN = "audit.regsandbox.test/evidence-server"
WRITER = "system:serviceaccount:regsandbox-system:regsandbox-operator"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RealAuditService]:
    """The real audit service over a log where two tenants' sandboxes ran."""
    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    compliant(history, "hospital-b", "oncology", "tumour-scans", reads=4)
    svc = RealAuditService(tmp_path / "audit", ORIGIN, WRITER)
    with AuditLog(svc.log, svc.signer) as log:
        for start in range(0, len(history.events), 5):
            log.append_batch(history.events[start : start + 5])
        log.publish_checkpoint()
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def test_a_pack_from_the_service_is_the_pack_from_the_log(
    tmp_path: Path, service: RealAuditService
) -> None:
    key = tmp_path / "officer.key"
    officer = generate_key_file(key, "evidence.regsandbox.test/officer")
    vkeys = []
    for name, verifier in (("officer", officer.verifier), ("log", service.signer.verifier)):
        write_vkey_file(tmp_path / f"{name}.vkey", verifier)
        vkeys += ["--vkey", str(tmp_path / f"{name}.vkey")]
    common = ["--sandbox", "bank-a/fraud", "--key", str(key)]
    code, _, err = run(
        "evidence", "pack", "--server", service.url, "-o", str(tmp_path / "remote"), *common
    )
    assert code == 0, err
    code, _, err = run(
        "evidence", "pack", "--log", str(service.log), "-o", str(tmp_path / "local"), *common
    )
    assert code == 0, err
    for name in ("entries.ndjson", "receipts", "checkpoint"):
        assert (tmp_path / "remote" / name).read_bytes() == (
            tmp_path / "local" / name
        ).read_bytes(), name
    code, out, err = run("evidence", "verify", str(tmp_path / "remote"), *vkeys, "-o", "json")
    assert code == 0, out + err
    report = json.loads(out)
    assert {f["status"] for f in report["findings"]} == {"satisfied"}
    assert b"hospital-b" not in (tmp_path / "remote" / "entries.ndjson").read_bytes()


class _Altering(httpx.BaseTransport):
    """Forwards to the real service, but changes the outcome in the first entry it serves
    (a compromised service or a man in the middle)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not request.url.path.endswith("/entries"):
            return response
        page = json.loads(response.read())
        entry = base64.b64decode(page["entries"][0]["entry"])
        page["entries"][0]["entry"] = base64.b64encode(
            entry.replace(b'"outcome":"success"', b'"outcome":"failure"')
        ).decode()
        return httpx.Response(200, json=page)


def test_a_service_serving_an_altered_entry_is_refused(service: RealAuditService) -> None:
    with pytest.raises(VerificationError, match="do not lead to its checkpoint"):
        collect_from_server(service.url, Scope("bank-a"), transport=_Altering())


def test_server_and_log_are_exclusive(tmp_path: Path) -> None:
    code, _, err = run(
        "evidence",
        "pack",
        "--server",
        "http://127.0.0.1:9",
        "--log",
        str(tmp_path),
        "--tenant",
        "bank-a",
        "-o",
        str(tmp_path / "p"),
        "--key",
        str(tmp_path / "k"),
    )
    assert code == 2
    assert "exactly one of --log DIR and --server URL" in err


class _NewerPages(httpx.BaseTransport):
    """Forwards to the real service, but says every page was answered under a larger
    checkpoint (as when the log grows while a pack is made)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.refetched = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/proof/inclusion"):
            self.refetched += 1
        if not request.url.path.endswith("/entries"):
            return response
        page = json.loads(response.read())
        page["size"] += 1
        return httpx.Response(200, json=page)


def test_proofs_are_fetched_again_for_the_first_checkpoint(service: RealAuditService) -> None:
    from sandbox.evidence.collect import collect

    transport = _NewerPages()
    remote = collect_from_server(service.url, Scope("bank-a"), transport=transport)
    local = collect(service.log, Scope("bank-a"))
    assert transport.refetched == len(remote.entries) > 0
    assert remote.entries == local.entries
    assert remote.receipt == local.receipt
