"""Archive to a real MinIO server: Object Lock (compliance), write-once, verification."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from audit.archive import (
    BUNDLE_SIZE,
    ArchiveConflictError,
    ArchiveError,
    S3Archive,
    bundle_key,
    checkpoint_key,
)
from audit.entry import Event
from audit.errors import VerificationError
from audit.log import AuditLog
from audit.note import Signer

pytestmark = pytest.mark.s3

ORIGIN = "audit.regsandbox.test/log"
MakeEvent = Callable[..., Event]


@pytest.fixture
def s3(minio: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=minio.endpoint,
        aws_access_key_id=minio.access_key,
        aws_secret_access_key=minio.secret_key,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}),
    )


@pytest.fixture
def archive(s3: Any) -> S3Archive:
    bucket = f"audit-{secrets.token_hex(6)}"
    a = S3Archive(s3, bucket, prefix="prod")
    a.create_bucket(retention_days=1)
    return a


def fill(log: AuditLog, event: MakeEvent, count: int, start: int = 0) -> None:
    for chunk in range(start, start + count, 500):
        log.append_batch([event(i) for i in range(chunk, min(chunk + 500, start + count))])
    log.publish_checkpoint()


def test_bucket_has_object_lock_in_compliance_mode(archive: S3Archive, s3: Any) -> None:
    assert archive.retention() == ("COMPLIANCE", 1)
    archive.create_bucket(retention_days=1)  # idempotent on our own bucket
    plain = f"plain-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=plain)
    with pytest.raises(ArchiveError, match="Object Lock"):
        S3Archive(s3, plain).create_bucket(retention_days=1)


def test_archive_is_write_once_and_verifies(
    archive: S3Archive, audit_log: AuditLog, signer: Signer, event: MakeEvent, s3: Any
) -> None:
    fill(audit_log, event, BUNDLE_SIZE + 17)
    size = archive.archive(audit_log)
    assert size == BUNDLE_SIZE + 17
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=archive.bucket)["Contents"]}
    assert keys == {
        bundle_key("prod/", 0, BUNDLE_SIZE),
        bundle_key("prod/", 1, 17),
        checkpoint_key("prod/", size),
    }
    assert archive.archive(audit_log) == size  # a retry finds identical bytes: success
    fill(audit_log, event, 300, start=size)
    assert archive.archive(audit_log, from_size=size) == size + 300
    report = archive.verify(audit_log, [signer.verifier])
    assert report.entries == size + 300
    assert report.checkpoints == 2
    head = s3.head_object(Bucket=archive.bucket, Key=checkpoint_key("prod/", size))
    assert head["ObjectLockMode"] == "COMPLIANCE"


def test_different_bytes_under_an_archived_name_are_refused(archive: S3Archive) -> None:
    assert archive.put_once("prod/checkpoints/x", b"one") is True
    assert archive.put_once("prod/checkpoints/x", b"one") is False
    with pytest.raises(ArchiveConflictError):
        archive.put_once("prod/checkpoints/x", b"two")


def test_locked_objects_cannot_be_deleted(archive: S3Archive, s3: Any) -> None:
    archive.put_once("prod/checkpoints/y", b"kept")
    version = s3.head_object(Bucket=archive.bucket, Key="prod/checkpoints/y")["VersionId"]
    with pytest.raises(ClientError):
        s3.delete_object(Bucket=archive.bucket, Key="prod/checkpoints/y", VersionId=version)
    assert s3.get_object(Bucket=archive.bucket, Key="prod/checkpoints/y")["Body"].read() == b"kept"


def test_verify_detects_a_log_that_differs_from_the_archive(
    archive: S3Archive, audit_log: AuditLog, signer: Signer, event: MakeEvent, tmp_path: Path
) -> None:
    fill(audit_log, event, 40)
    archive.archive(audit_log)
    other = AuditLog.create(tmp_path / "forked", ORIGIN, signer)
    try:
        fill(other, event, 40)  # same key, different entries (fresh nonces): a fork
        with pytest.raises(VerificationError) as info:
            archive.verify(other, [signer.verifier])
        assert info.value.index == 0
        short = AuditLog.create(tmp_path / "short", ORIGIN, signer)
        try:
            with pytest.raises(VerificationError, match="truncated"):
                archive.verify(short, [signer.verifier])
        finally:
            short.close()
    finally:
        other.close()
    with pytest.raises(VerificationError):
        archive.verify(audit_log, [Signer.generate(ORIGIN).verifier])
