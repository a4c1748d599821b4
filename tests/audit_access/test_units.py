"""The pieces with no server: tile names (C2SP tlog-tiles), the tenant index, the cache."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from audit.access import CachedAuthority, Reader, Scope, Verb, check_tenant_name
from audit.entry import encode_entry
from audit.errors import MalformedError
from audit.tenants import TenantIndex
from audit.tiles import Tile, parse_tile_path, tile_width
from tests.audit_access.conftest import event


@pytest.mark.parametrize(
    ("path", "tile"),
    [
        ("tile/0/000", Tile(0, 0, 256)),
        ("tile/0/x001/x234/067", Tile(0, 1234067, 256)),  # the specification's example
        ("tile/1/000.p/2", Tile(1, 0, 2)),
        ("tile/entries/x001/000.p/255", Tile(None, 1000, 255)),
        ("tile/5/999", Tile(5, 999, 256)),
    ],
)
def test_tile_paths_parse_and_print_as_the_specification_writes_them(path: str, tile: Tile) -> None:
    assert parse_tile_path(path) == tile
    assert tile.path == path


@pytest.mark.parametrize(
    "path",
    [
        "tile/6/000",  # above level 5
        "tile/0/0",  # not three digits
        "tile/0/x000/001",  # a leading zero group
        "tile/0/001/002",  # a non-final group without x
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/07",
        "tile/data/000",
        "tile/0/../000",
    ],
)
def test_a_tile_path_written_any_other_way_is_refused(path: str) -> None:
    with pytest.raises(MalformedError):
        parse_tile_path(path)


def test_tile_widths_follow_the_tree_size() -> None:
    assert tile_width(0, 0, 600) == 256
    assert tile_width(0, 2, 600) == 88
    assert tile_width(0, 3, 600) == 0
    assert tile_width(1, 0, 600) == 2
    assert tile_width(None, 2, 600) == 88
    assert tile_width(1, 0, 255) == 0


def test_the_tenant_index_pages_a_tenants_entries_only() -> None:
    plan = ["a", "b", None, "a", "a", "b", "a"]
    data = [encode_entry(event(tenant, n), n) for n, tenant in enumerate(plan)]
    index = TenantIndex(lambda i: data[i])
    assert index.page("a", 0, 2, 5) == ([0, 3], 4)
    assert index.page("a", 4, 2, 5) == ([4], None)
    assert index.indexed == 5
    assert index.page("a", 4, 10, 7) == ([4, 6], None)
    assert index.page("c", 0, 10, 7) == ([], None)
    assert index.tenant_of(2, 7) is None
    assert index.tenant_of(5, 7) == "b"


def test_tenant_names_are_dns_labels() -> None:
    assert check_tenant_name("lux-bank") == "lux-bank"
    for bad in ("", "Lux", "a/b", "-a", "a" * 64, "..", "a_b"):
        with pytest.raises(MalformedError):
            check_tenant_name(bad)


class _Counting:
    """An authority that accepts token "good" and allows tenant "a"; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def authenticate(self, token: str) -> Reader | None:
        self.calls += 1
        return Reader("alice") if token == "good" else None

    def may_read(self, reader: Reader, scope: Scope, verb: Verb) -> bool:
        self.calls += 1
        return scope.tenant == "a"


def test_the_cache_reuses_answers_for_ttl_seconds_and_never_remembers_a_bad_token() -> None:
    now = [0.0]
    inner = _Counting()
    cache = CachedAuthority(inner, ttl=10, clock=lambda: now[0])
    alice = cache.authenticate("good")
    assert alice is not None
    assert cache.may_read(alice, Scope("a"), "get")
    assert not cache.may_read(alice, Scope("b"), "get")
    assert inner.calls == 3
    assert cache.authenticate("good") == alice
    assert cache.may_read(alice, Scope("a"), "get")
    assert not cache.may_read(alice, Scope("b"), "get")
    assert inner.calls == 3  # all three answered from the cache
    assert cache.may_read(alice, Scope("a"), "list")  # another verb is another question
    assert inner.calls == 4
    assert cache.authenticate("bad") is None
    assert cache.authenticate("bad") is None
    assert inner.calls == 6  # a refused token is asked again each time
    now[0] = 10.0
    assert cache.may_read(alice, Scope("a"), "get")
    assert inner.calls == 7  # expired after ttl


def test_the_cache_is_bounded_and_can_be_turned_off() -> None:
    inner = _Counting()
    cache = CachedAuthority(inner, ttl=10, size=2)
    reader = Reader("alice")
    for tenant in ("a", "b", "c"):
        cache.may_read(reader, Scope(tenant), "get")
    cache.may_read(reader, Scope("a"), "get")  # evicted, asked again
    assert inner.calls == 4
    off = CachedAuthority(inner, ttl=0)
    off.may_read(reader, Scope("a"), "get")
    off.may_read(reader, Scope("a"), "get")
    assert inner.calls == 6


def test_an_unreachable_api_server_fails_reads_closed_with_503(tmp_path: Path) -> None:
    from kubernetes import client

    from audit.log import AuditLog
    from audit.note import Signer
    from audit.service import AccessPolicy, create_app
    from sandbox.devenv.processes import free_port
    from sandbox.kube.audit_access import KubernetesReaders
    from tests.servers import serve_app

    cfg = client.Configuration()
    cfg.host = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    readers = KubernetesReaders(client.ApiClient(cfg), lambda t: f"tenant-{t}", timeout=2)
    signer = Signer.generate("audit.regsandbox.test/closed")
    log = AuditLog.create(tmp_path / "log", "audit.regsandbox.test/closed", signer)
    try:
        log.append(event("bank", 0))
        log.publish_checkpoint()
        app = create_app(log, AccessPolicy(writers={}, readers={}, authority=readers))
        with serve_app(app) as url:
            for path in ("/v1/tenants/bank/entries", "/v1/checkpoint", "/tlog/checkpoint"):
                answer = httpx.get(
                    f"{url}{path}", headers={"Authorization": "Bearer some-token"}, timeout=30
                )
                assert answer.status_code == 503, (path, answer.text)
                assert "some-token" not in answer.text
    finally:
        log.close()


def test_serve_refuses_open_reads_with_kubernetes_readers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sandbox.cli import app

    writers = tmp_path / "writers"
    writers.write_text("")
    args = ["serve", "--log", str(tmp_path), "--writers", str(writers)]
    result = CliRunner().invoke(app, ["audit", *args, "--kube-readers", "--open-reads"])
    assert result.exit_code == 2
    assert "--open-reads" in result.stderr


def test_the_tenant_is_read_from_the_top_level_resource_whatever_details_hold() -> None:
    from audit.entry import Actor, Event, Resource
    from audit.tenants import entry_tenant

    tricky = [
        {"resource": {"tenant": "other"}},
        {"zzz": {"resource": {"tenant": "other"}}},
        {"note": '"resource":{"tenant":"other"}'},
        {"resource": [{"tenant": "other"}], "tenant": "other"},
    ]
    for n, details in enumerate(tricky):
        for tenant in ("bank", None):
            data = encode_entry(
                Event(
                    actor=Actor(user='x"resource":{"tenant":"other"}'),
                    action="dataset.read",
                    resource=Resource(kind="Dataset", name='n"}', tenant=tenant),
                    outcome="success",
                    details=details,
                ),
                n,
            )
            assert entry_tenant(data) == tenant, data
    with pytest.raises(MalformedError):
        entry_tenant(b'{"action":"x"}')
