"""The audit HTTP service: only writers append; reads are byte-exact; proofs verify."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from audit.checkpoint import open_checkpoint
from audit.entry import Event, encode_entry
from audit.errors import MalformedError, StorageError
from audit.log import AuditLog
from audit.merkle import leaf_hash, verify_consistency, verify_inclusion
from audit.note import Signer
from audit.proof import verify_tlog_proof
from audit.service import AccessPolicy, LogBackend, create_app, load_tokens, token_digest

Serve = Callable[..., Any]
ORIGIN = "audit.regsandbox.test/log"
WRITER, READER = "writer-token-0123456789", "reader-token-0123456789"


def policy(*, open_reads: bool = False) -> AccessPolicy:
    return AccessPolicy(
        writers={token_digest(WRITER): "operator"},
        readers={token_digest(READER): "compliance"},
        open_reads=open_reads,
    )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def body(*events: Event) -> dict[str, Any]:
    return {"events": [e.model_dump(mode="json") for e in events]}


@pytest.fixture
def http(audit_log: AuditLog, serve: Serve) -> Iterator[httpx.Client]:
    backend: LogBackend = audit_log  # AuditLog satisfies the service's protocol
    with serve(create_app(backend, policy())) as url, httpx.Client(base_url=url) as client:
        yield client


def b64list(hashes: list[str]) -> list[bytes]:
    return [base64.b64decode(h) for h in hashes]


def test_append_without_a_token_is_401_and_writes_nothing(
    http: httpx.Client, audit_log: AuditLog, event: Callable[..., Event]
) -> None:
    r = http.post("/v1/entries", json=body(event()))
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = http.post("/v1/entries", json=body(event()), headers={"Authorization": "Basic x"})
    assert r.status_code == 401
    assert audit_log.size == 0


def test_append_with_an_unknown_token_is_401_and_a_reader_token_403(
    http: httpx.Client, audit_log: AuditLog, event: Callable[..., Event]
) -> None:
    r = http.post("/v1/entries", json=body(event()), headers=auth("guess"))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    r = http.post("/v1/entries", json=body(event()), headers=auth(READER))
    assert r.status_code == 403
    assert audit_log.size == 0


def test_authorised_append_returns_indices_and_entries_read_back_exactly(
    http: httpx.Client, audit_log: AuditLog, event: Callable[..., Event]
) -> None:
    events = [event(i) for i in range(3)]
    r = http.post("/v1/entries", json=body(*events), headers=auth(WRITER))
    assert r.status_code == 200, r.text
    assert r.json() == {"indices": [0, 1, 2]}
    assert audit_log.size == 3
    audit_log.publish_checkpoint()
    for i, logged in enumerate(events):
        got = http.get(f"/v1/entries/{i}", headers=auth(READER))
        assert got.status_code == 200
        assert got.content == encode_entry(logged, i) == audit_log.entry_bytes(i)
    ranged = http.get("/v1/entries", params={"start": 1, "end": 3}, headers=auth(WRITER))
    assert (
        ranged.content
        == b"".join(encode_entry(e, i) + b"\n" for i, e in enumerate(events))[
            len(encode_entry(events[0], 0)) + 1 :
        ]
    )
    assert http.get("/v1/entries/3", headers=auth(READER)).status_code == 404


def test_reads_need_a_token_unless_open(
    audit_log: AuditLog, serve: Serve, event: Callable[..., Event]
) -> None:
    with serve(create_app(audit_log, policy())) as url:
        assert httpx.get(f"{url}/v1/checkpoint").status_code == 401
        assert httpx.get(f"{url}/v1/checkpoint", headers=auth("nope")).status_code == 401
        assert httpx.get(f"{url}/v1/checkpoint", headers=auth(READER)).status_code == 200
    with serve(create_app(audit_log, policy(open_reads=True))) as url:
        r = httpx.get(f"{url}/v1/checkpoint")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert r.content == audit_log.checkpoint_note
        assert httpx.post(f"{url}/v1/entries", json=body(event())).status_code == 401


def test_served_proofs_and_receipts_verify(
    http: httpx.Client, audit_log: AuditLog, signer: Signer, event: Callable[..., Event]
) -> None:
    first = [event(i) for i in range(5)]
    http.post("/v1/entries", json=body(*first), headers=auth(WRITER)).raise_for_status()
    audit_log.publish_checkpoint()
    old = open_checkpoint(
        http.get("/v1/checkpoint", headers=auth(READER)).content, [signer.verifier]
    )
    more = [event(i) for i in range(5, 13)]
    http.post("/v1/entries", json=body(*more), headers=auth(WRITER)).raise_for_status()
    # a receipt for an entry not yet in a checkpoint makes the log sign one
    receipt = http.get("/v1/receipt/12", headers=auth(READER))
    assert receipt.status_code == 200
    cp = verify_tlog_proof(receipt.content, encode_entry(more[-1], 12), [signer.verifier])
    assert cp.size == 13
    new = open_checkpoint(
        http.get("/v1/checkpoint", headers=auth(READER)).content, [signer.verifier]
    )
    assert new.size == 13
    inc = http.get("/v1/proof/inclusion", params={"index": 2, "size": 13}, headers=auth(READER))
    verify_inclusion(
        leaf_hash(encode_entry(first[2], 2)), 2, 13, b64list(inc.json()["hashes"]), new.root
    )
    con = http.get("/v1/proof/consistency", params={"old": old.size}, headers=auth(READER))
    assert con.json()["new"] == 13
    verify_consistency(old.size, 13, b64list(con.json()["hashes"]), old.root, new.root)
    assert http.get("/v1/receipt/13", headers=auth(READER)).status_code == 404
    bad = http.get("/v1/proof/consistency", params={"old": 0}, headers=auth(READER))
    assert bad.status_code == 404


def test_invalid_batches_are_refused_and_write_nothing(
    http: httpx.Client, audit_log: AuditLog, event: Callable[..., Event]
) -> None:
    good = event().model_dump(mode="json")
    cases: list[tuple[Any, int]] = [
        ({"events": []}, 400),
        ({"events": [good, {**good, "action": "NOT AN ACTION"}]}, 422),
        ({"events": [good, {**good, "details": {"blob": "x" * 70_000}}]}, 422),
        ({"events": [{**good, "surprise": 1}]}, 422),
        ({"entries": [good]}, 400),
    ]
    for payload, status in cases:
        r = http.post("/v1/entries", json=payload, headers=auth(WRITER))
        assert r.status_code == status, (payload, r.text)
    r = http.post("/v1/entries", content=b"{not json", headers=auth(WRITER))
    assert r.status_code == 400
    assert audit_log.size == 0


class BrokenLog:
    """A log whose storage fails on append (as after a failed fsync)."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)

    def append_batch(self, events: Sequence[Event]) -> list[int]:
        raise StorageError("the log stopped accepting appends after a write failure")


def test_append_the_log_cannot_make_durable_is_503(
    audit_log: AuditLog, serve: Serve, event: Callable[..., Event]
) -> None:
    with serve(create_app(BrokenLog(audit_log), policy())) as url:
        r = httpx.post(f"{url}/v1/entries", json=body(event()), headers=auth(WRITER))
    assert r.status_code == 503
    assert audit_log.size == 0


def test_token_files(tmp_path: Path) -> None:
    path = tmp_path / "writers"
    path.write_text(f"# operator\n{token_digest(WRITER)} operator  # comment\n\n")
    assert load_tokens(path) == {token_digest(WRITER): "operator"}
    for bad in ("nothex operator\n", f"{token_digest(WRITER)}\n", f"{WRITER} operator\n"):
        path.write_text(bad)
        with pytest.raises(MalformedError) as info:
            load_tokens(path)
        assert WRITER not in str(info.value)
    with pytest.raises(StorageError):
        load_tokens(tmp_path / "missing")


def test_policy_identifies_tokens() -> None:
    p = policy()
    assert p.identify(WRITER, p.writers) == "operator"
    assert p.identify(READER, p.writers) is None
    assert ORIGIN  # the fixture log's origin is shared with the other tests
