"""The running audit service archives its log to a real MinIO, and the archive verifies alone.

Each test runs ``sandboxctl audit serve`` as a process (as the chart does), appends over
HTTP, waits (bounded) for the archive to catch up, and checks the bucket with boto3 and
with ``sandboxctl audit archive verify``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from audit.archive import BUNDLE_SIZE, bundle_key, checkpoint_key
from audit.client import AuditClient
from audit.entry import Event
from audit.log import AuditLog
from audit.note import Signer
from audit.service import token_digest
from audit.signing import generate_key_file
from tests.servers import stop_process

from .conftest import ORIGIN, S3Server, free_port, wait_for

MakeEvent = Callable[..., Event]
TOKEN = "archiver-writer-token-0123456789"
SANDBOXCTL = [sys.executable, "-m", "sandbox.cli"]


def _status(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/healthz/archive", timeout=2.0)
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@dataclass
class Deployment:
    """One log directory, its key and tokens, and an archive bucket on MinIO."""

    root: Path
    s3: S3Server
    bucket: str = field(default_factory=lambda: f"audit-{secrets.token_hex(6)}")
    prefix: str = "prod/"

    def __post_init__(self) -> None:
        self.key = self.root / "keys" / "log.key"
        self.key.parent.mkdir(parents=True)
        self.signer: Signer = generate_key_file(self.key, ORIGIN)
        self.writers = self.root / "writers"
        self.writers.write_text(f"{token_digest(TOKEN)} operator\n")
        self.log = self.root / "volume" / "log"
        self.init_log()
        self.runs = 0

    def init_log(self) -> None:
        AuditLog.create(self.log, ORIGIN, self.signer).close()

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    @contextmanager
    def serving(self, *extra: str, endpoint: str | None = None) -> Iterator[Service]:
        """Run ``sandboxctl audit serve`` with the archive on; yield when it answers."""
        self.runs += 1
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        output = self.root / f"serve-{self.runs}.log"
        args = [
            *SANDBOXCTL,
            "audit",
            "serve",
            f"--log={self.log}",
            f"--key={self.key}",
            f"--writers={self.writers}",
            f"--listen=127.0.0.1:{port}",
            f"--archive-bucket={self.bucket}",
            f"--archive-prefix={self.prefix}",
            f"--archive-endpoint={endpoint or self.s3.endpoint}",
            "--archive-region=us-east-1",
            "--archive-retention-days=1",
            "--archive-interval=0.2",
            *extra,
        ]
        with output.open("wb") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=self.env)
            service = Service(proc, url, output)
            try:

                def up() -> bool:
                    if proc.poll() is not None:
                        pytest.fail(f"the service exited {proc.returncode}: {output.read_text()}")
                    return bool(_status(url))

                wait_for(up, "the service")
                yield service
            finally:
                service.stop()

    def verify(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``sandboxctl audit archive verify`` on this deployment's bucket."""
        return subprocess.run(
            [
                *SANDBOXCTL,
                "audit",
                "archive",
                "verify",
                f"--bucket={self.bucket}",
                f"--prefix={self.prefix}",
                f"--endpoint={self.s3.endpoint}",
                f"--vkey={self.signer.verifier.vkey}",
                *args,
            ],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def versions(self, s3: Any) -> dict[str, int]:
        """Number of versions of each key in the bucket."""
        counts: dict[str, int] = {}
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket):
            for item in page.get("Versions", []):
                counts[item["Key"]] = counts.get(item["Key"], 0) + 1
        return counts


@dataclass
class Service:
    """A running ``sandboxctl audit serve`` process."""

    proc: subprocess.Popen[bytes]
    url: str
    output: Path

    def client(self, signer: Signer) -> AuditClient:
        return AuditClient(self.url, TOKEN, verifiers=[signer.verifier])

    def append(self, signer: Signer, events: list[Event]) -> list[int]:
        with self.client(signer) as client:
            return client.append(events)

    def checkpointed(self, signer: Signer, size: int) -> int:
        """Wait until the service signed a checkpoint covering ``size`` entries."""

        def covered() -> bool:
            with self.client(signer) as client:
                note = client.checkpoint()
            return int(note.split(b"\n")[1]) >= size

        wait_for(covered, f"a checkpoint of {size}")
        return size

    def archived(self, size: int) -> dict[str, Any]:
        """Wait until the archive holds the checkpoint of ``size``; return the status."""
        wait_for(
            lambda: _status(self.url)["archivedSize"] == size,
            f"the archive to reach {size} (last: {self.last_status()})",
        )
        return _status(self.url)

    def last_status(self) -> Any:
        try:
            return _status(self.url)
        except Exception as exc:
            return repr(exc)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.proc)


@pytest.fixture
def deployment(tmp_path: Path, minio: S3Server) -> Deployment:
    return Deployment(tmp_path, minio)


def _events(event: MakeEvent, start: int, count: int) -> list[Event]:
    return [event(n) for n in range(start, start + count)]


@pytest.mark.s3
def test_the_archive_outlives_the_log_volume_and_verifies_alone(
    deployment: Deployment, event: MakeEvent, minio: S3Server
) -> None:
    d = deployment
    acknowledged: list[int] = []
    with d.serving() as service:
        for start in range(0, BUNDLE_SIZE + 40, 100):  # more than one bundle
            count = min(100, BUNDLE_SIZE + 40 - start)
            acknowledged += service.append(d.signer, _events(event, start, count))
        size = service.checkpointed(d.signer, len(acknowledged))
        status = service.archived(size)
        assert status["entriesBehind"] == 0
        assert status["condition"]["status"] == "True", status
        assert status["condition"]["reason"] == "UpToDate"
        metrics = httpx.get(f"{service.url}/metrics", timeout=2.0).text
        assert "regsandbox_audit_archive_entries_behind 0.0" in metrics
        assert "regsandbox_audit_archive_ok 1.0" in metrics
        listed = httpx.get(f"{service.url}/v1/status", timeout=2.0).json()["conditions"]
        assert {"type": "Archived", "status": "True", "reason": "UpToDate"}.items() <= next(
            c for c in listed if c["type"] == "Archived"
        ).items()
    assert acknowledged == list(range(BUNDLE_SIZE + 40))

    shutil.rmtree(d.root / "volume")  # the log's volume is gone

    result = d.verify("-o", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # pure JSON on stdout
    assert report["ok"] is True
    assert report["entries"] == report["verified"] == len(acknowledged)
    assert report["latest"]["size"] == len(acknowledged)
    assert report["retention"] == {"mode": "COMPLIANCE", "days": 1}
    assert not [f for f in report["findings"] if f["fatal"]]
    table = d.verify()
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("ok: ")
    s3 = minio_client(minio)
    keys = d.versions(s3)
    assert f"prod/{bundle_key('', 0, BUNDLE_SIZE)}" in keys
    assert f"prod/{checkpoint_key('', len(acknowledged))}" in keys


def minio_client(minio: S3Server) -> Any:
    from sandbox.devenv.minio import MinioServer

    return MinioServer(minio.endpoint, minio.access_key, minio.secret_key).client()


@pytest.mark.s3
def test_archived_objects_cannot_be_deleted_or_overwritten_and_tampering_fails_verify(
    deployment: Deployment, event: MakeEvent, minio: S3Server
) -> None:
    d = deployment
    with d.serving() as service:
        service.append(d.signer, _events(event, 0, 30))
        service.archived(service.checkpointed(d.signer, 30))
    s3 = minio_client(minio)
    key = f"prod/{bundle_key('', 0, 30)}"
    original = s3.get_object(Bucket=d.bucket, Key=key)
    version, kept = original["VersionId"], original["Body"].read()
    assert original["ObjectLockMode"] == "COMPLIANCE"
    assert d.verify().returncode == 0

    # MinIO refuses to delete the archived version, or to write over it in place
    with pytest.raises(ClientError) as refused:
        s3.delete_object(Bucket=d.bucket, Key=key, VersionId=version)
    assert "WORM" in str(refused.value)  # MinIO: "Object is WORM protected"
    with pytest.raises(ClientError) as refused:
        s3.put_object(Bucket=d.bucket, Key=key, Body=b"forged\n", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412

    # a plain PUT adds a newer version: that is tampering, and verify must say so
    forged = kept.replace(b'"claims-3"', b'"claims-X"')
    assert forged != kept
    s3.put_object(Bucket=d.bucket, Key=key, Body=forged)
    assert s3.get_object(Bucket=d.bucket, Key=key)["Body"].read() == forged
    assert s3.get_object(Bucket=d.bucket, Key=key, VersionId=version)["Body"].read() == kept
    result = d.verify("-o", "json")
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [f["code"] for f in report["findings"] if f["fatal"]] == ["Overwritten"]
    assert report["findings"][0]["key"] == bundle_key("", 0, 30)
    assert "verification failed" in result.stderr

    # a delete without a version id only hides the object: also reported
    checkpoint = f"prod/{checkpoint_key('', 30)}"
    s3.delete_object(Bucket=d.bucket, Key=checkpoint)
    hidden = json.loads(d.verify("-o", "json").stdout)
    assert "Hidden" in {f["code"] for f in hidden["findings"] if f["fatal"]}
    assert hidden["verified"] == 30  # the locked original still verifies


@pytest.mark.s3
def test_a_killed_service_resumes_archiving_without_duplicates_or_gaps(
    deployment: Deployment, event: MakeEvent, minio: S3Server
) -> None:
    d = deployment
    with d.serving() as service:
        service.append(d.signer, _events(event, 0, 100))
        service.archived(service.checkpointed(d.signer, 100))
        service.append(d.signer, _events(event, 100, 100))
        service.checkpointed(d.signer, 200)
        service.kill()  # kill -9, whatever the archiver was doing
    with d.serving() as service:
        # where to resume comes from the bucket; nothing is written twice
        assert service.archived(200)["archivedSize"] == 200
        service.append(d.signer, _events(event, 200, 150))
        service.archived(service.checkpointed(d.signer, 350))
    s3 = minio_client(minio)
    versions = d.versions(s3)
    assert all(count == 1 for count in versions.values()), versions
    report = json.loads(d.verify("-o", "json").stdout)
    assert report["ok"] is True, report
    assert report["entries"] == report["verified"] == 350
    assert not report["findings"]


@pytest.mark.s3
def test_a_replaced_log_is_refused_by_the_archive_but_appends_go_on(
    deployment: Deployment, event: MakeEvent, minio: S3Server
) -> None:
    d = deployment
    with d.serving() as service:
        service.append(d.signer, _events(event, 0, 20))
        service.archived(service.checkpointed(d.signer, 20))
    shutil.rmtree(d.log)
    d.init_log()  # a new, empty log with the same key, archiving to the same place
    with d.serving() as service:
        wait_for(
            lambda: _status(service.url)["condition"]["reason"] == "ArchiveConflict",
            "the archive conflict to show",
        )
        status = _status(service.url)
        assert status["condition"]["status"] == "False"
        assert "rolled back or replaced" in status["condition"]["message"]
        assert service.append(d.signer, _events(event, 0, 5)) == [0, 1, 2, 3, 4]
        metrics = httpx.get(f"{service.url}/metrics", timeout=2.0).text
        assert 'regsandbox_audit_archive_failures_total{reason="ArchiveConflict"}' in metrics
        assert "regsandbox_audit_archive_ok 0.0" in metrics
    versions = d.versions(minio_client(minio))
    assert set(versions) == {  # nothing from the new log
        f"prod/{checkpoint_key('', 0)}",
        f"prod/{bundle_key('', 0, 20)}",
        f"prod/{checkpoint_key('', 20)}",
    }
    assert json.loads(d.verify("-o", "json").stdout)["verified"] == 20


def test_an_unreachable_archive_shows_but_does_not_block_appends(
    tmp_path: Path, event: MakeEvent
) -> None:
    nowhere = S3Server(f"http://127.0.0.1:{free_port()}", "nobody", "nothing")
    d = Deployment(tmp_path, nowhere)
    with d.serving() as service:
        assert service.append(d.signer, _events(event, 0, 3)) == [0, 1, 2]
        wait_for(
            lambda: _status(service.url)["condition"]["reason"] == "ArchiveFailing",
            "the archive failure to show",
        )
        status = _status(service.url)
        assert status["condition"]["status"] == "False"
        assert status["archivedSize"] is None
        service.checkpointed(d.signer, 3)
        wait_for(lambda: _status(service.url)["entriesBehind"] == 3, "the lag to show")
        metrics = httpx.get(f"{service.url}/metrics", timeout=2.0).text
        assert "regsandbox_audit_archive_entries_behind 3.0" in metrics
        listed = httpx.get(f"{service.url}/v1/status", timeout=2.0)
        assert listed.status_code == 200  # informs; the service stays ready and appends
        archived = next(c for c in listed.json()["conditions"] if c["type"] == "Archived")
        assert (archived["status"], archived["reason"]) == ("False", "ArchiveFailing")
        assert httpx.get(f"{service.url}/healthz", timeout=2.0).status_code == 200
    assert "nothing" not in service.output.read_text()  # no credential in the logs


def test_archive_options_need_a_bucket(tmp_path: Path) -> None:
    writers = tmp_path / "writers"
    writers.write_text(f"{token_digest(TOKEN)} operator\n")
    key = tmp_path / "log.key"
    AuditLog.create(tmp_path / "log", ORIGIN, generate_key_file(key, ORIGIN)).close()
    result = subprocess.run(
        [
            *SANDBOXCTL,
            "audit",
            "serve",
            f"--log={tmp_path / 'log'}",
            f"--key={key}",
            f"--writers={writers}",
            "--archive-retention-days=7",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--archive-bucket" in result.stderr


@pytest.mark.s3
def test_archive_verify_of_a_bucket_it_cannot_read_is_an_error(
    tmp_path: Path, minio: S3Server
) -> None:
    d = Deployment(tmp_path, minio)  # its bucket was never created
    result = d.verify("-o", "json")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "NoSuchBucket" in result.stderr
