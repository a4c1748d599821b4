"""S3 clients configured only by environment: list, read and write, each read logged.

boto3 and s3fs take the endpoint, the role and the projected token file from the
environment and do the STS exchange themselves; pyarrow reads and writes Parquet
through s3fs (its native S3FileSystem ignores ``AWS_ENDPOINT_URL``, apache/arrow#49643).
Every read is in the audit log with the pod and the SHA-256 of the bytes sent.
"""

from __future__ import annotations

import hashlib
import io
import os

import boto3
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import s3fs

from audit.entry import Entry
from sandbox.devenv.minio import MinioServer
from sandbox.gateway import Gateway
from sandbox.provision.names import sandbox_id
from tests.gateway.conftest import SwitchableSink, World, sha256

from .conftest import OUTBOX, PodEnv

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def _reads(entries: list[Entry], key: str) -> list[Entry]:
    return [
        e
        for e in entries
        if e.action == "dataset.read" and e.details.get("key") == key and "sha256" in e.details
    ]


def test_boto3_lists_reads_and_writes_with_web_identity(
    pod_env: PodEnv, world: World, audit_sink: SwitchableSink, s3: object
) -> None:
    pod_env.use(world.token("alpha"))
    start = audit_sink.size
    c = boto3.client("s3")
    names = [b["Name"] for b in c.list_buckets()["Buckets"]]
    assert names == [world.claims, "outbox"]  # granted datasets, and the outbox
    listing = c.list_objects_v2(Bucket=world.claims, Delimiter="/")
    assert [o["Key"] for o in listing["Contents"]] == ["big.bin", "empty.bin", "small.csv"]
    assert [p["Prefix"] for p in listing["CommonPrefixes"]] == ["dir/"]
    whole = c.get_object(Bucket=world.claims, Key="small.csv")["Body"].read()
    assert whole == world.objects["small.csv"]
    part = c.get_object(Bucket=world.claims, Key="big.bin", Range="bytes=100-199")
    assert part["Body"].read() == world.objects["big.bin"][100:200]
    assert part["ContentRange"] == f"bytes 100-199/{len(world.objects['big.bin'])}"
    assert c.head_object(Bucket=world.claims, Key="dir/part-0001.bin")["ContentLength"] == 300_000
    c.put_object(Bucket="outbox", Key="models/boto3.bin", Body=b"weights")

    entries = audit_sink.entries_since(start)
    issued = [e for e in entries if e.action == "credentials.issued"]
    assert len(issued) == 1
    assert issued[0].actor.pod == f"sbx-{world.tenant}-alpha/train-0"
    (small,) = _reads(entries, "small.csv")
    assert small.actor.pod == f"sbx-{world.tenant}-alpha/train-0"
    assert small.resource.sandbox == "alpha"
    assert small.details["sha256"] == sha256(world.objects["small.csv"])
    (ranged,) = _reads(entries, "big.bin")
    assert ranged.details["range"] == "bytes=100-199"
    assert ranged.details["sha256"] == sha256(world.objects["big.bin"][100:200])
    (written,) = [e for e in entries if e.action == "model.artifact.written"]
    assert written.details["sha256"] == sha256(b"weights")
    assert written.actor.pod == f"sbx-{world.tenant}-alpha/train-0"
    assert (
        written.details["object"] == f"{sandbox_id(world.tenant, 'alpha')}/outbox/models/boto3.bin"
    )


def test_streamed_read_is_logged_with_its_sha(
    pod_env: PodEnv, world: World, audit_sink: SwitchableSink
) -> None:
    pod_env.use(world.token("alpha"))
    c = boto3.client("s3")
    start = audit_sink.size
    body = c.get_object(Bucket=world.claims, Key="big.bin")["Body"].read()
    assert body == world.objects["big.bin"]
    (done,) = _reads(audit_sink.entries_since(start), "big.bin")
    assert done.details["phase"] == "completed"
    assert done.details["bytes"] == len(body)
    assert done.details["sha256"] == hashlib.sha256(body).hexdigest()


def test_listing_pages_with_continuation(pod_env: PodEnv, world: World) -> None:
    pod_env.use(world.token("alpha"))
    c = boto3.client("s3")
    pages = c.get_paginator("list_objects_v2").paginate(
        Bucket=world.claims, PaginationConfig={"PageSize": 1}
    )
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert keys == sorted(world.objects)
    rolled = list(
        c.get_paginator("list_objects_v2").paginate(
            Bucket=world.claims, Delimiter="/", PaginationConfig={"PageSize": 1}
        )
    )
    seen = [o["Key"] for page in rolled for o in page.get("Contents", [])]
    prefixes = [p["Prefix"] for page in rolled for p in page.get("CommonPrefixes", [])]
    assert seen == ["big.bin", "empty.bin", "small.csv"]
    assert prefixes == ["dir/"]  # once, though a page ended on it
    sub = c.list_objects_v2(Bucket=world.claims, Prefix="dir/")
    assert [o["Key"] for o in sub["Contents"]] == ["dir/part-0001.bin"]


def test_s3fs_lists_reads_and_writes(
    pod_env: PodEnv, world: World, audit_sink: SwitchableSink, s3: object
) -> None:
    pod_env.use(world.token("alpha"))
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    start = audit_sink.size
    assert sorted(fs.ls(world.claims)) == sorted(
        f"{world.claims}/{k}" for k in ("big.bin", "dir", "empty.bin", "small.csv")
    )
    assert fs.cat(f"{world.claims}/small.csv") == world.objects["small.csv"]
    with fs.open(f"{world.claims}/dir/part-0001.bin", "rb") as f:
        f.seek(1000)
        assert f.read(5000) == world.objects["dir/part-0001.bin"][1000:6000]
    with fs.open("outbox/models/s3fs.bin", "wb") as f:
        f.write(b"s3fs model")
    entries = audit_sink.entries_since(start)
    (small,) = _reads(entries, "small.csv")
    assert small.actor.pod == f"sbx-{world.tenant}-alpha/train-0"
    assert small.details["sha256"] == sha256(world.objects["small.csv"])
    parts = _reads(entries, "dir/part-0001.bin")
    assert parts
    assert all(e.actor.pod == small.actor.pod for e in parts)
    assert any(
        e.details["sha256"] == sha256(b"s3fs model")
        for e in entries
        if e.action == "model.artifact.written"
    )


def test_pyarrow_parquet_round_trip(
    pod_env: PodEnv, world: World, audit_sink: SwitchableSink, s3_gateway: Gateway, s3: object
) -> None:
    pod_env.use(world.token("alpha"))
    fs = pafs.PyFileSystem(pafs.FSSpecHandler(s3fs.S3FileSystem(skip_instance_cache=True)))
    table = pa.table({"id": [1, 2, 3], "score": [0.5, 0.25, 0.125]})
    pq.write_table(table, "outbox/models/scores.parquet", filesystem=fs)
    store = s3.client()  # type: ignore[attr-defined]
    key = f"{sandbox_id(world.tenant, 'alpha')}/outbox/models/scores.parquet"
    stored = store.get_object(Bucket=OUTBOX, Key=key)["Body"].read()
    assert pq.read_table(io.BytesIO(stored)).equals(table)
    start = audit_sink.size
    with fs.open_input_file(f"{world.claims}/small.csv") as f:
        assert f.read() == world.objects["small.csv"]
    info = fs.get_file_info(pafs.FileSelector(world.claims, recursive=True))
    assert sorted(i.path for i in info if i.type == pafs.FileType.File) == sorted(
        f"{world.claims}/{k}" for k in world.objects
    )
    (read,) = _reads(audit_sink.entries_since(start), "small.csv")
    assert read.details["sha256"] == sha256(world.objects["small.csv"])


def test_multipart_uploads_land_whole_and_logged_before_commit(
    pod_env: PodEnv, world: World, audit_sink: SwitchableSink, s3: MinioServer
) -> None:
    pod_env.use(world.token("alpha"))
    data = os.urandom(21 * 1024 * 1024)  # three 8 MiB parts with boto3's defaults
    source = io.BytesIO(data)
    start = audit_sink.size
    boto3.client("s3").upload_fileobj(source, "outbox", "models/large.bin")
    key = f"{sandbox_id(world.tenant, 'alpha')}/outbox/models/large.bin"
    stored = s3.client().get_object(Bucket=OUTBOX, Key=key)["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == sha256(data)
    entries = [e for e in audit_sink.entries_since(start) if e.action == "model.artifact.written"]
    parts = [e for e in entries if e.details["phase"] == "part"]
    assert len(parts) == 3
    assert sum(int(str(e.details["bytes"])) for e in parts) == len(data)
    (commit,) = [e for e in entries if e.details["phase"] == "commit"]
    assert commit.details["sha256"] == sha256(data)
    assert commit.details["object"] == key
    assert commit.actor.pod == f"sbx-{world.tenant}-alpha/train-0"
    staged = s3.client().list_objects_v2(
        Bucket=OUTBOX, Prefix=f"{sandbox_id(world.tenant, 'alpha')}/staging/"
    )
    assert staged.get("KeyCount", 0) == 0
