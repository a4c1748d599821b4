"""The S3 surface: request ids in answers and audit entries; no credential in the logs.

A pod exchanges its projected token for session credentials (STS), then reads and
writes with them; with everything logged at DEBUG (the gateway's lines and the S3
client's, both in this process), neither the token nor the session's secret key nor its
session token appears in the logs.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import boto3
import pytest

from sandbox.logs import configure_logging
from tests.gateway.conftest import SwitchableSink, World

from .conftest import ROLE_ARN

pytestmark = [pytest.mark.integration, pytest.mark.s3]


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level, handlers = root.level, root.handlers[:]
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def test_s3_requests_carry_their_id_and_no_credential_is_logged(
    s3_url: str, world: World, audit_sink: SwitchableSink, logs: io.StringIO
) -> None:
    token = world.token("alpha")
    sts = boto3.client(
        "sts",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    creds = sts.assume_role_with_web_identity(
        RoleArn=ROLE_ARN, RoleSessionName="notebook", WebIdentityToken=token
    )["Credentials"]
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_url,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    start = audit_sink.size
    got = s3.get_object(Bucket=world.claims, Key="small.csv")
    assert got["Body"].read() == world.objects["small.csv"]
    rid = got["ResponseMetadata"]["HTTPHeaders"]["x-request-id"]
    assert got["ResponseMetadata"]["RequestId"] == rid  # x-amz-request-id: the same id
    reads = [e for e in audit_sink.entries_since(start) if e.action == "dataset.read"]
    assert reads
    assert {e.request_id for e in reads} == {rid}

    text = logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert any(d.get("event") == "request" and d.get("request_id") == rid for d in lines)
    for secret in (token, creds["SecretAccessKey"], creds["SessionToken"]):
        assert secret not in text
