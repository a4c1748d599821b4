"""The console's parts that need no server: sessions, filters, the checkpoint history.

Sessions end when they expire or are closed and never hold more than their bound;
filters mean what an officer reads on the form (an action covers its dotted steps, a
time range is half-open and UTC); the history remembers each checkpoint once. A service
with open reads (a developer's laptop) shows its console without a sign-in, and one
without sends the browser to sign in.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import httpx
import pytest

from audit.console import CheckpointHistory, Filters, Paging, SessionStore, search
from audit.entry import Actor, Event, Resource
from audit.errors import MalformedError
from audit.log import AuditLog
from audit.note import Signer
from audit.service import AccessPolicy, create_app
from audit.tenants import TenantIndex
from tests.servers import serve_app


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_when_it_expires_or_is_closed() -> None:
    clock = Clock()
    store = SessionStore(60, clock=clock)
    session_id, session = store.open("the-token", "bank", "alice")
    assert "the-token" not in session_id
    assert store.get(session_id) == session
    clock.now += 59
    assert store.get(session_id) == session
    clock.now += 1
    assert store.get(session_id) is None
    other, _ = store.open("t2", None, "bob")
    store.close(other)
    assert store.get(other) is None
    assert store.get("never-issued") is None


def test_the_store_keeps_at_most_its_bound_dropping_the_oldest() -> None:
    store = SessionStore(60, size=2)
    first, _ = store.open("a", None, "a")
    second, _ = store.open("b", None, "b")
    third, _ = store.open("c", None, "c")
    assert store.get(first) is None
    assert store.get(second) is not None
    assert store.get(third) is not None


def _doc(action: str, when: str, **resource: str) -> dict[str, object]:
    return {
        "action": action,
        "time": when,
        "outcome": "success",
        "actor": {"service_account": "tenant-bank/analyst"},
        "resource": {"kind": "Dataset", "name": "loans", **resource},
    }


def test_filters_mean_what_the_form_says() -> None:
    reviewed = _doc("model.export.reviewed", "2026-03-02T15:00:00.000000Z")
    exported = _doc("model.exported", "2026-03-02T15:00:00.000000Z")
    assert Filters(action="model.export").matches(reviewed)
    assert not Filters(action="model.export").matches(exported)
    assert Filters(action="model.export.reviewed").matches(reviewed)
    assert Filters(actor="analyst").matches(reviewed)
    assert not Filters(actor="auditor").matches(reviewed)
    assert Filters(dataset="loans").matches(reviewed)
    assert not Filters(dataset="cards").matches(reviewed)
    assert Filters(since="2026-03-02T15:00", until="2026-03-02T15:00:01").matches(reviewed)
    assert not Filters(until="2026-03-02T15:00").matches(reviewed)  # until is exclusive
    assert Filters(since="2026-03-02T16:00+01:00").matches(reviewed)  # a zone is honoured
    assert not Filters(since="2026-01-01").matches({**reviewed, "time": None})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("since", "yesterday"),
        ("outcome", "maybe"),
        ("tenant", "Not_A_Tenant"),
        ("actor", "x" * 300),
    ],
)
def test_bad_filters_are_refused_with_the_field_named(field: str, value: str) -> None:
    with pytest.raises(MalformedError):
        Filters.from_query({field: value})


def test_the_history_remembers_each_checkpoint_once(tmp_path: Path) -> None:
    signer = Signer.generate("log.example/h")
    with AuditLog.create(tmp_path / "log", "log.example/h", signer) as log:
        history = CheckpointHistory(size=2)
        first = log.checkpoint_note
        history.observe(first)
        history.observe(first)
        assert [s.note for s in history.seen()] == [first]
        for n in range(2):
            log.append(_event(n))
            history.observe(log.publish_checkpoint())
        assert [s.checkpoint.size for s in history.seen()] == [1, 2]  # bounded: 0 dropped


def _event(n: int) -> Event:
    return Event(
        actor=Actor(user="u"),
        action="dataset.read",
        resource=Resource(kind="Dataset", name=f"d{n}", tenant="bank"),
        outcome="success",
    )


@pytest.mark.parametrize(("open_reads", "status"), [(True, 200), (False, 303)])
def test_without_credentials_the_console_reads_only_what_the_api_would(
    tmp_path: Path, open_reads: bool, status: int
) -> None:
    signer = Signer.generate("log.example/open")
    with AuditLog.create(tmp_path / "log", "log.example/open", signer) as log:
        log.append(_event(0))
        log.publish_checkpoint()
        policy = AccessPolicy(writers={}, readers={}, open_reads=open_reads)
        with serve_app(create_app(log, policy)) as url:
            page = httpx.get(f"{url}/console/tenants/bank/entries", timeout=30)
        assert page.status_code == status
        if open_reads:
            assert "d0" in page.text
            assert "Sign out" not in page.text
        else:
            assert page.headers["location"] == "/console/login"


def _entries(n: int, tenant_at: set[int]) -> list[bytes]:
    return [
        json.dumps(
            {
                "action": "dataset.read",
                "outcome": "success",
                "resource": {
                    "kind": "Dataset",
                    "name": "d",
                    "tenant": "x" if i in tenant_at else "y",
                },
                "time": "2026-03-02T15:00:00.000000Z",
            },
            separators=(",", ":"),
        ).encode()
        for i in range(n)
    ]


@pytest.mark.parametrize("newest_first", [True, False])
def test_a_sparse_tenant_pages_through_the_whole_log_each_entry_once(newest_first: bool) -> None:
    where = {5, 1500, 2999, 70_000}
    data = _entries(70_001, where)
    tenants = TenantIndex(data.__getitem__)
    seen: list[int] = []
    start: int | None = None
    for _ in range(10):
        found = search(
            data.__getitem__,
            tenants,
            "x",
            Filters(),
            Paging(start, limit=3, budget=100, newest_first=newest_first),
            len(data),
        )
        assert found.scanned <= 4  # only the tenant's entries are read
        seen += [row.index for row in found.rows]
        start = found.next_start
        if start is None:
            break
    assert seen == sorted(where, reverse=newest_first)


def test_every_page_and_asset_ships_in_the_wheel() -> None:
    """pyproject's package-data covers each template and static file (the image installs
    the wheel, so a file it misses would be a 500 in production, not in a checkout)."""
    root = Path(__file__).resolve().parents[2]
    with (root / "pyproject.toml").open("rb") as handle:
        patterns = tomllib.load(handle)["tool"]["setuptools"]["package-data"]["audit.console"]
    package = root / "audit" / "console"
    files = [
        path.relative_to(package).as_posix()
        for folder in ("templates", "static")
        for path in (package / folder).rglob("*")
        if path.is_file()
    ]
    assert {"templates/entry.html", "static/verify.js", "static/console.css"} <= set(files)
    missing = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert missing == []


def test_one_reader_signing_in_again_and_again_signs_no_one_else_out() -> None:
    """The store is bounded; one officer (any tenant's auditor) opening sessions in a
    loop must not push everyone else's out of it: each reader keeps only their own
    newest few."""
    store = SessionStore(60, size=50, per_reader=4)
    others = [store.open(f"t{n}", None, f"officer-{n}")[0] for n in range(3)]
    loop = [store.open("x", "bank", "mallory")[0] for _ in range(500)]
    assert all(store.get(s) is not None for s in others)
    assert [s for s in loop if store.get(s) is not None] == loop[-4:]
