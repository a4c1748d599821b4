"""Allowed reads: listing, HEAD, GET (whole, range, streamed), each logged exactly."""

from __future__ import annotations

import concurrent.futures
import hashlib

import httpx
import pytest

from .conftest import BIG, SwitchableSink, World, sha256

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def _get(
    url: str, token: str, headers: dict[str, str] | None = None, **kwargs: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **(headers or {})}
    return httpx.get(url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]


def test_list_shows_only_the_dataset_prefix(
    gateway_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    start = audit_sink.size
    r = _get(f"{gateway_url}/v1/datasets/{world.claims}/objects", world.token("alpha"))
    assert r.status_code == 200, r.text
    keys = [o["key"] for o in r.json()["objects"]]
    assert keys == sorted(world.objects)
    assert "leak.txt" not in str(keys)
    (entry,) = audit_sink.entries_since(start)
    assert entry.action == "dataset.list"
    assert entry.outcome == "success"
    assert entry.actor.pod == f"sbx-{world.tenant}-alpha/train-0"
    assert entry.actor.service_account == f"sbx-{world.tenant}-alpha/workload"
    assert entry.resource.sandbox == "alpha"
    assert entry.resource.tenant == world.tenant
    assert entry.details["count"] == len(world.objects)
    assert entry.request_id == r.headers["x-request-id"]


def test_list_pages_with_after(gateway_url: str, world: World) -> None:
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects"
    first = _get(url, world.token("alpha"), params={"limit": 2}).json()
    assert first["truncated"] is True
    rest = _get(url, world.token("alpha"), params={"after": first["nextAfter"]}).json()
    keys = [o["key"] for o in first["objects"] + rest["objects"]]
    assert keys == sorted(world.objects)
    sub = _get(url, world.token("alpha"), params={"prefix": "dir/"}).json()
    assert [o["key"] for o in sub["objects"]] == ["dir/part-0001.bin"]


def test_head_gives_size_and_is_logged(
    gateway_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    start = audit_sink.size
    r = httpx.head(
        f"{gateway_url}/v1/datasets/{world.claims}/objects/dir/part-0001.bin",
        headers={"Authorization": f"Bearer {world.token('alpha')}"},
    )
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == 300_000
    (entry,) = audit_sink.entries_since(start)
    assert (entry.action, entry.details["phase"], entry.details["method"]) == (
        "dataset.read",
        "head",
        "HEAD",
    )
    assert entry.details["bytes"] == 0


@pytest.mark.parametrize("key", ["small.csv", "dir/part-0001.bin", "empty.bin"])
def test_small_read_is_one_record_with_matching_sha(
    gateway_url: str, world: World, audit_sink: SwitchableSink, key: str
) -> None:
    start = audit_sink.size
    r = _get(f"{gateway_url}/v1/datasets/{world.claims}/objects/{key}", world.token("alpha"))
    assert r.status_code == 200
    assert r.content == world.objects[key]
    assert r.headers["cache-control"] == "no-store"
    (entry,) = audit_sink.entries_since(start)
    assert entry.details["phase"] == "read"
    assert entry.details["key"] == key
    assert entry.details["bytes"] == len(world.objects[key])
    assert entry.details["sha256"] == sha256(world.objects[key])
    assert entry.details["whole_object"] is True
    assert entry.decision is not None
    assert entry.decision.allow


def test_range_read(gateway_url: str, world: World, audit_sink: SwitchableSink) -> None:
    start = audit_sink.size
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/dir/part-0001.bin"
    r = _get(url, world.token("alpha"), headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.content == world.objects["dir/part-0001.bin"][100:200]
    assert r.headers["content-range"] == "bytes 100-199/300000"
    (entry,) = audit_sink.entries_since(start)
    assert entry.details["range"] == "bytes=100-199"
    assert entry.details["bytes"] == 100
    assert entry.details["whole_object"] is False
    assert entry.details["sha256"] == sha256(r.content)
    suffix = _get(url, world.token("alpha"), headers={"Range": "bytes=-10"})
    assert suffix.content == world.objects["dir/part-0001.bin"][-10:]


@pytest.mark.parametrize("value", ["bytes=5-1", "bytes=0-1,5-6", "items=0-1", "bytes=999999-"])
def test_bad_ranges_are_416_and_logged(
    gateway_url: str, world: World, audit_sink: SwitchableSink, value: str
) -> None:
    start = audit_sink.size
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/small.csv"
    r = _get(url, world.token("alpha"), headers={"Range": value})
    assert r.status_code == 416
    (entry,) = audit_sink.entries_since(start)
    assert entry.details["reason"] == "RangeNotSatisfiable"


def test_missing_object_is_404_and_logged(
    gateway_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    start = audit_sink.size
    r = _get(f"{gateway_url}/v1/datasets/{world.claims}/objects/nope.bin", world.token("alpha"))
    assert r.status_code == 404
    (entry,) = audit_sink.entries_since(start)
    assert entry.outcome == "failure"
    assert entry.details["reason"] == "ObjectNotFound"


def test_big_object_streams_with_started_and_completed_records(
    gateway_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    start = audit_sink.size
    digest, size = hashlib.sha256(), 0
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/big.bin"
    with httpx.stream(
        "GET", url, headers={"Authorization": f"Bearer {world.token('alpha')}"}, timeout=60
    ) as r:
        assert r.status_code == 200
        assert int(r.headers["content-length"]) == BIG
        for chunk in r.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    assert size == BIG
    assert digest.hexdigest() == sha256(world.objects["big.bin"])
    started, completed = audit_sink.entries_since(start)
    assert started.request_id == completed.request_id
    assert started.details["phase"] == "started"
    assert completed.details["phase"] == "completed"
    assert completed.outcome == "success"
    assert completed.details["bytes"] == BIG
    assert completed.details["sha256"] == digest.hexdigest()


def test_concurrent_readers(gateway_url: str, world: World, audit_sink: SwitchableSink) -> None:
    start = audit_sink.size
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/big.bin"

    def read(_: int) -> str:
        digest = hashlib.sha256()
        with httpx.stream(
            "GET", url, headers={"Authorization": f"Bearer {world.token('alpha')}"}, timeout=60
        ) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                digest.update(chunk)
        return digest.hexdigest()

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        digests = list(pool.map(read, range(6)))
    expected = sha256(world.objects["big.bin"])
    assert digests == [expected] * 6
    completed = [e for e in audit_sink.entries_since(start) if e.details["phase"] == "completed"]
    assert len(completed) == 6
    assert {e.details["sha256"] for e in completed} == {expected}
    assert {e.details["bytes"] for e in completed} == {BIG}
    assert len({e.request_id for e in completed}) == 6
