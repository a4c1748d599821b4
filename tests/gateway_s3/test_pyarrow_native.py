"""pyarrow's own S3FileSystem (Arrow's bundled AWS SDK for C++), as installed.

Checked with the pyarrow the project pins: it ignores ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_S3`` (it goes to ``*.amazonaws.com``), and its web-identity provider
ignores ``AWS_ENDPOINT_URL_STS`` (it asks AWS's STS). What works without code beyond
naming the endpoint is the SDK's ``credential_process``: a profile whose process does
the web-identity exchange with boto3 (which honours the variables) and prints the
credentials, plus ``endpoint_override`` from ``AWS_ENDPOINT_URL`` — the recipe in
docs/tenants.md, tested here as written there.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sandbox.devenv.minio import MinioServer
from sandbox.provision.names import sandbox_id
from tests.gateway.conftest import SwitchableSink, World, sha256

from .conftest import OUTBOX, PodEnv

pytestmark = [pytest.mark.integration, pytest.mark.s3]

# The profile of docs/tenants.md ("pyarrow's own S3FileSystem"), with this Python.
CREDENTIAL_PROCESS = (
    'credential_process = {python} -c "import boto3, json, os; '
    "c = boto3.client('sts').assume_role_with_web_identity(RoleArn=os.environ['AWS_ROLE_ARN'], "
    "RoleSessionName='pyarrow', WebIdentityToken=open(os.environ['AWS_WEB_IDENTITY_TOKEN_FILE'])"
    ".read())['Credentials']; print(json.dumps({{'Version': 1, "
    "'AccessKeyId': c['AccessKeyId'], 'SecretAccessKey': c['SecretAccessKey'], "
    "'SessionToken': c['SessionToken'], 'Expiration': c['Expiration'].isoformat()}}))\"\n"
)


# What a notebook runs: only the endpoint is named in code.
PYARROW = """
import hashlib, json, os
import pyarrow as pa, pyarrow.fs as pafs, pyarrow.parquet as pq
fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"])
names = [i.base_name for i in fs.get_file_info(pafs.FileSelector("{dataset}"))]
with fs.open_input_stream("{dataset}/small.csv") as handle:
    small = hashlib.sha256(handle.read()).hexdigest()
table = pa.table({{"id": [1, 2, 3], "score": [0.1, 0.5, 0.9]}})
pq.write_table(table, "{path}", filesystem=fs)
print(json.dumps([names, small]), flush=True)
del fs
pafs.finalize_s3()
"""


def test_arrow_ignores_the_endpoint_variables(
    pod_env: PodEnv, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Documented in docs/tenants.md; when Arrow honours them, this fails: update the docs."""
    pod_env.use(world.token("alpha"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", pod_env.url)
    fs = pafs.S3FileSystem(
        connect_timeout=2,
        request_timeout=2,
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
    )
    with pytest.raises(OSError, match=r"amazonaws\.com"):
        fs.get_file_info(f"{world.claims}/small.csv")


def test_credential_process_and_endpoint_override_read_and_write(
    pod_env: PodEnv,
    world: World,
    audit_sink: SwitchableSink,
    s3: MinioServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod_env.use(world.token("alpha"))
    config = tmp_path / "aws-config"
    config.write_text("[default]\n" + CREDENTIAL_PROCESS.format(python=sys.executable))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    start = audit_sink.size

    run = uuid.uuid4().hex[:8]
    # In a process of its own, as in a pod (and the gateway here shares this one's GIL).
    script = PYARROW.format(dataset=world.claims, path=f"outbox/{run}/scores.parquet")
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=40, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"stdout={exc.stdout!r} stderr={exc.stderr!r}") from None
    assert done.returncode == 0, done.stdout + done.stderr
    names, small = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(names) >= {"small.csv", "big.bin", "dir"}
    assert small == sha256(world.objects["small.csv"])
    table = pa.table({"id": [1, 2, 3], "score": [0.1, 0.5, 0.9]})
    key = f"{sandbox_id(world.tenant, 'alpha')}/outbox/{run}/scores.parquet"
    stored = s3.client().get_object(Bucket=OUTBOX, Key=key)["Body"].read()
    assert pq.read_table(pa.BufferReader(stored)).equals(table)

    entries = audit_sink.entries_since(start)
    (issued,) = [e for e in entries if e.action == "credentials.issued"]
    assert issued.actor.pod == f"sbx-{world.tenant}-alpha/train-0"
    reads = [
        e
        for e in entries
        if e.action == "dataset.read"
        and e.details.get("key") == "small.csv"
        and "sha256" in e.details
    ]
    assert reads
    assert {e.details["sha256"] for e in reads} == {sha256(world.objects["small.csv"])}
    assert {e.actor.pod for e in reads} == {f"sbx-{world.tenant}-alpha/train-0"}
    (commit,) = [
        e
        for e in entries
        if e.action == "model.artifact.written" and e.details.get("phase") == "commit"
    ]
    assert commit.details["sha256"] == hashlib.sha256(stored).hexdigest()
