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
from prometheus_client import generate_latest

from audit.archive import (
    BUNDLE_SIZE,
    ArchiveConflictError,
    ArchiveError,
    S3Archive,
    bundle_bytes,
    bundle_key,
    checkpoint_key,
)
from audit.archiver import Archiver
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


def test_latest_checkpoint_is_found_without_listing_everything(archive: S3Archive) -> None:
    assert archive.latest_checkpoint() is None
    for size in (0, 1, 7, 255, 256, 1000, 123_456_789):
        archive.put_once(checkpoint_key("prod/", size), f"cp {size}".encode())
        assert archive.latest_checkpoint() == (size, f"cp {size}".encode())
    archive.put_once(checkpoint_key("prod/", 300), b"cp 300")  # an older size, later
    assert archive.latest_checkpoint() == (123_456_789, b"cp 123456789")


def test_the_archive_verifies_on_its_own(
    archive: S3Archive, audit_log: AuditLog, signer: Signer, event: MakeEvent
) -> None:
    fill(audit_log, event, BUNDLE_SIZE + 17)
    size = archive.archive(audit_log)
    fill(audit_log, event, 300, start=size)
    archive.archive(audit_log, from_size=size)
    result = archive.verify_archive([signer.verifier])
    assert result.ok, result.findings
    assert result.entries == result.verified == size + 300
    assert result.checkpoints == 2
    assert result.retention == ("COMPLIANCE", 1)
    assert result.findings == ()
    stranger = archive.verify_archive([Signer.generate(ORIGIN).verifier])
    assert not stranger.ok
    assert {f.code for f in stranger.findings} == {"BadCheckpoint"}
    assert stranger.verified == 0


def test_verify_archive_reports_gaps(
    archive: S3Archive, audit_log: AuditLog, event: MakeEvent, signer: Signer
) -> None:
    fill(audit_log, event, BUNDLE_SIZE + 44)
    tail = [audit_log.entry_bytes(i) for i in range(BUNDLE_SIZE, BUNDLE_SIZE + 44)]
    archive.put_once(bundle_key("prod/", 1, 44), bundle_bytes(tail))  # bundle 0 missing
    archive.put_once(checkpoint_key("prod/", BUNDLE_SIZE + 44), audit_log.checkpoint_note)
    result = archive.verify_archive([signer.verifier])
    assert not result.ok
    assert [f.code for f in result.findings] == ["Gap", "Gap"]
    assert "from 0" in result.findings[0].message
    assert result.entries == result.verified == 0


def test_verify_archive_finds_a_fork_and_the_archiver_refuses_to_write_one(
    archive: S3Archive, audit_log: AuditLog, signer: Signer, event: MakeEvent, tmp_path: Path
) -> None:
    fill(audit_log, event, 40)
    Archiver(archive, audit_log, interval=1).run_once()
    other = AuditLog.create(tmp_path / "forked", ORIGIN, signer)
    try:
        fill(other, event, 60)  # same key, other entries: a fork of the log
        archiver = Archiver(archive, other, interval=1)
        status = archiver.run_once()
        assert (status.status, status.reason) == ("False", "ArchiveConflict")
        assert "does not extend" in status.message
        assert archive.verify_archive([signer.verifier]).ok  # the archiver wrote nothing
        archive.archive(other)  # the library alone has no such check: a forked archive
    finally:
        other.close()
    result = archive.verify_archive([signer.verifier])
    assert not result.ok
    codes = [f.code for f in result.findings]
    assert "BundlesDisagree" in codes
    assert "RootMismatch" in codes


def test_objects_without_compliance_retention_fail_verification(
    s3: Any, audit_log: AuditLog, signer: Signer, event: MakeEvent
) -> None:
    bucket = f"nolock-{secrets.token_hex(6)}"
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)  # no default rule
    fill(audit_log, event, 5)
    loose = S3Archive(s3, bucket, prefix="loose")
    loose.archive(audit_log)
    result = loose.verify_archive([signer.verifier])
    assert not result.ok
    assert {f.code for f in result.findings if f.fatal} == {"NotLocked"}
    assert result.retention is None
    locked = S3Archive(s3, bucket, prefix="locked", retention_days=1)
    locked.archive(audit_log)
    result = locked.verify_archive([signer.verifier])
    assert result.ok, result.findings
    assert [f.code for f in result.findings] == ["NoDefaultRetention"]
    head = s3.head_object(Bucket=bucket, Key=checkpoint_key("locked/", 5))
    assert head["ObjectLockMode"] == "COMPLIANCE"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_archiver_reports_lag_as_status_and_metrics(
    archive: S3Archive, audit_log: AuditLog, event: MakeEvent
) -> None:
    clock = FakeClock()
    archiver = Archiver(archive, audit_log, interval=5, max_lag=10, clock=clock)
    try:
        assert (archiver.status().status, archiver.status().reason) == ("Unknown", "Starting")
        fill(audit_log, event, 10)
        done = archiver.run_once()
        assert (done.archived_size, done.status, done.reason) == (10, "True", "UpToDate")
        fill(audit_log, event, 5, start=10)
        behind = archiver.status()
        assert (behind.entries_behind, behind.reason) == (5, "Archiving")
        clock.now += 11
        late = archiver.status()
        assert (late.status, late.reason, late.seconds_behind) == ("False", "ArchiveBehind", 11)
        exposed = generate_latest(archiver.registry).decode()
        assert "regsandbox_audit_archive_seconds_behind 11.0" in exposed
        assert "regsandbox_audit_archive_entries_behind 5.0" in exposed
        caught_up = archiver.run_once()
        assert (caught_up.archived_size, caught_up.reason) == (15, "UpToDate")
        assert caught_up.seconds_behind == 0
        resumed = Archiver(archive, audit_log, interval=5)  # a restart: state from the bucket
        assert resumed.run_once().archived_size == 15
        resumed.stop()
    finally:
        archiver.stop()
    assert generate_latest(archiver.registry) == b""


def test_archiver_never_writes_over_other_bytes_and_says_so(
    archive: S3Archive, audit_log: AuditLog, event: MakeEvent, s3: Any
) -> None:
    fill(audit_log, event, 5)
    planted = bundle_key("prod/", 0, 5)
    archive.put_once(planted, b"not what the log holds\n")  # e.g. a forged object
    archiver = Archiver(archive, audit_log, interval=1)
    try:
        status = archiver.run_once()
        assert (status.status, status.reason) == ("False", "ArchiveConflict")
        assert planted in status.message
        again = archiver.run_once()  # retried, and still refused
        assert again.reason == "ArchiveConflict"
        exposed = generate_latest(archiver.registry).decode()
        assert 'regsandbox_audit_archive_failures_total{reason="ArchiveConflict"} 2.0' in exposed
    finally:
        archiver.stop()
    body = s3.get_object(Bucket=archive.bucket, Key=planted)["Body"].read()
    assert body == b"not what the log holds\n"
    assert "Contents" not in s3.list_objects_v2(Bucket=archive.bucket, Prefix="prod/checkpoints/")


def test_objects_under_names_the_archiver_never_writes_fail_verification(
    archive: S3Archive, audit_log: AuditLog, signer: Signer, event: MakeEvent
) -> None:
    fill(audit_log, event, 3)
    archive.archive(audit_log)
    full = bundle_bytes(audit_log.entry_bytes(i) for i in range(3))
    archive.put_once("prod/entries/0000000000000000.p/03", full)  # not the name of width 3
    archive.put_once(f"prod/entries/0000000000000000.p/{BUNDLE_SIZE}", full)
    archive.put_once("prod/notes.txt", b"hello")
    result = archive.verify_archive([signer.verifier])
    assert not result.ok
    unknown = sorted(f.key for f in result.findings if f.code == "UnknownObject")
    assert unknown == [
        "entries/0000000000000000.p/03",
        f"entries/0000000000000000.p/{BUNDLE_SIZE}",
        "notes.txt",
    ]
    assert result.verified == 3
