"""DuckDB through the gateway's S3 API, with no internet.

DuckDB fetches its ``httpfs`` extension from extensions.duckdb.org on first use, which
a sandbox cannot reach; the PyPI package ``duckdb-ext-httpfs`` ships the (signed)
extension for one DuckDB version, and ``LOAD`` takes it from there. DuckDB does not do
the web-identity exchange itself: it gets the credentials boto3 obtained (the recipe in
docs/tenants.md), reads a granted dataset and writes Parquet into the outbox; both are
in the audit log with the pod.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from pathlib import Path

import boto3
import duckdb
import duckdb_ext
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sandbox.devenv.minio import MinioServer
from sandbox.provision.names import sandbox_id
from tests.gateway.conftest import SwitchableSink, World, sha256

from .conftest import OUTBOX, PodEnv

pytestmark = [pytest.mark.integration, pytest.mark.s3]


def _httpfs() -> str:
    found = sorted(
        Path(duckdb_ext.__path__[0]).glob(
            f"extensions/v{duckdb.__version__}/*/httpfs.duckdb_extension"
        )
    )
    assert found, f"no httpfs extension for DuckDB {duckdb.__version__} in duckdb-ext-httpfs"
    return str(found[0])


def test_duckdb_reads_a_dataset_and_writes_parquet_to_the_outbox(
    pod_env: PodEnv, world: World, audit_sink: SwitchableSink, s3: MinioServer
) -> None:
    pod_env.use(world.token("alpha"))
    start = audit_sink.size
    creds = boto3.Session().get_credentials()
    assert creds is not None
    c = creds.get_frozen_credentials()
    endpoint = urllib.parse.urlsplit(os.environ["AWS_ENDPOINT_URL"]).netloc
    con = duckdb.connect()
    con.execute(f"LOAD '{_httpfs()}'")
    con.execute(
        f"CREATE SECRET gateway (TYPE s3, KEY_ID '{c.access_key}', SECRET '{c.secret_key}', "
        f"SESSION_TOKEN '{c.token}', ENDPOINT '{endpoint}', URL_STYLE 'path', "
        f"USE_SSL false, REGION '{os.environ['AWS_REGION']}')"
    )
    expected = world.objects["small.csv"].decode().strip().splitlines()
    source = f"s3://{world.claims}/small.csv"
    (count,) = con.execute(
        "SELECT count(*) FROM read_csv(?, header=false)", [source]
    ).fetchone() or (None,)
    assert count == len(expected)
    run = uuid.uuid4().hex[:8]
    con.execute(f"COPY (SELECT 42 AS answer) TO 's3://outbox/{run}/duck.parquet'")
    con.close()

    key = f"{sandbox_id(world.tenant, 'alpha')}/outbox/{run}/duck.parquet"
    stored = s3.client().get_object(Bucket=OUTBOX, Key=key)["Body"].read()
    assert pq.read_table(pa.BufferReader(stored)).to_pylist() == [{"answer": 42}]
    entries = audit_sink.entries_since(start)
    pod = f"sbx-{world.tenant}-alpha/train-0"
    reads = [
        e
        for e in entries
        if e.action == "dataset.read"
        and e.details.get("key") == "small.csv"
        and "sha256" in e.details
    ]
    assert reads
    assert {e.actor.pod for e in reads} == {pod}
    assert sha256(world.objects["small.csv"]) in {e.details["sha256"] for e in reads}
    (commit,) = [
        e
        for e in entries
        if e.action == "model.artifact.written" and e.details.get("phase") == "commit"
    ]
    assert commit.actor.pod == pod
    assert commit.details["sha256"] == sha256(stored)
