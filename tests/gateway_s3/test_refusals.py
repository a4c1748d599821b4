"""What the S3 surface refuses, with the S3 error a client expects, and logs.

Each case is an attacker's or a mistaken client's request against the real control
plane, MinIO and audit log: another sandbox's credentials, a sandbox that expired or
lost its grant or its pod, a tampered signature or session token, a replay, a skewed
clock, a bucket not granted, a write outside the outbox and path tricks in keys.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.auth
import httpx
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from kubernetes import client
from kubernetes.client.rest import ApiException

from audit.entry import Entry
from sandbox.devenv.minio import MinioServer
from sandbox.gateway.s3api import S3Surface
from sandbox.gateway.sigv4 import READ_REPLAY_GRACE_SECONDS
from sandbox.provision.names import sandbox_namespace
from tests.gateway.conftest import SwitchableSink, World, pod_token, set_sandbox_status

from .conftest import OUTBOX, ROLE_ARN

pytestmark = [pytest.mark.integration, pytest.mark.s3]

_ONCE = Config(retries={"max_attempts": 1, "mode": "standard"})


def _credentials(url: str, token: str) -> dict[str, str]:
    sts = boto3.client(
        "sts", endpoint_url=url, region_name="us-east-1", config=Config(signature_version=UNSIGNED)
    )
    got = sts.assume_role_with_web_identity(
        RoleArn=ROLE_ARN, RoleSessionName="test", WebIdentityToken=token
    )["Credentials"]
    return {
        "aws_access_key_id": got["AccessKeyId"],
        "aws_secret_access_key": got["SecretAccessKey"],
        "aws_session_token": got["SessionToken"],
    }


def _s3(url: str, creds: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1", config=_ONCE, **creds)


def _refused(call: Any, code: str, status: int) -> ClientError:
    with pytest.raises(ClientError) as info:
        call()
    err = info.value.response
    assert err["Error"]["Code"] == code, err
    assert err["ResponseMetadata"]["HTTPStatusCode"] == status
    return info.value


def _logged(sink: SwitchableSink, start: int, reason: str) -> Entry:
    found = [e for e in sink.entries_since(start) if e.details.get("reason") == reason]
    assert len(found) == 1, [e.details for e in sink.entries_since(start)]
    assert found[0].outcome in ("denied", "failure")
    return found[0]


@pytest.fixture(scope="module")
def alpha(s3_url: str, world: World) -> dict[str, str]:
    """Credentials of the alpha sandbox's pod."""
    return _credentials(s3_url, world.token("alpha"))


def test_other_sandbox_credentials_do_not_open_its_bucket(
    s3_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    beta = _s3(s3_url, _credentials(s3_url, world.token("beta")))
    start = audit_sink.size
    _refused(lambda: beta.get_object(Bucket=world.claims, Key="small.csv"), "AccessDenied", 403)
    entry = _logged(audit_sink, start, "DatasetNotGranted")
    assert entry.actor.pod == f"sbx-{world.tenant}-beta/train-0"
    assert (entry.resource.name, entry.details["key"]) == (world.claims, "small.csv")


def test_credentials_copied_to_another_pod_are_refused(
    s3_url: str, world: World, audit_sink: SwitchableSink, alpha: dict[str, str]
) -> None:
    c = _s3(s3_url, alpha)
    gets = _capture(c, "GetObject")
    assert c.get_object(Bucket=world.claims, Key="small.csv")["Body"].read()
    start = audit_sink.size
    elsewhere = httpx.HTTPTransport(local_address="127.0.0.2")  # another pod's address
    copied = _resend(gets[0], transport=elsewhere)
    assert copied.status_code == 403
    assert b"<Code>InvalidToken</Code>" in copied.content
    assert world.objects["small.csv"] not in copied.content
    _logged(audit_sink, start, "InvalidToken")


def test_bucket_not_granted(
    s3_url: str, world: World, audit_sink: SwitchableSink, alpha: dict[str, str]
) -> None:
    c = _s3(s3_url, alpha)
    start = audit_sink.size
    _refused(lambda: c.list_objects_v2(Bucket=world.other), "AccessDenied", 403)
    entry = _logged(audit_sink, start, "DatasetNotGranted")
    assert entry.actor.pod == f"sbx-{world.tenant}-alpha/train-0"


@pytest.mark.parametrize(
    ("sandbox", "reason"), [("old", "SandboxExpired"), ("idle", "SandboxNotReady")]
)
def test_no_credentials_for_a_sandbox_that_may_not_act(
    s3_url: str, world: World, audit_sink: SwitchableSink, sandbox: str, reason: str
) -> None:
    start = audit_sink.size
    _refused(lambda: _credentials(s3_url, world.token(sandbox)), "AccessDenied", 403)
    entry = _logged(audit_sink, start, reason)
    assert entry.action == "credentials.issued"
    assert entry.actor.pod == f"sbx-{world.tenant}-{sandbox}/train-0"


def test_foreign_token_gets_no_credentials(
    s3_url: str, world: World, audit_sink: SwitchableSink
) -> None:
    start = audit_sink.size
    _refused(lambda: _credentials(s3_url, world.token("alpha") + "x"), "InvalidIdentityToken", 400)
    _logged(audit_sink, start, "InvalidIdentityToken")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"granted": {"claims": False}}, "DatasetNotGranted"),
        ({"granted": {"claims": True}, "expires_in": dt.timedelta(seconds=-5)}, "SandboxExpired"),
    ],
)
def test_revocation_bites_at_use_time(
    s3_url: str,
    world: World,
    audit_sink: SwitchableSink,
    alpha: dict[str, str],
    change: dict[str, Any],
    reason: str,
) -> None:
    c = _s3(s3_url, alpha)
    assert c.head_object(Bucket=world.claims, Key="small.csv")["ContentLength"] > 0
    granted = {world.claims: change["granted"]["claims"], world.other: False}
    expires = change.get("expires_in", dt.timedelta(hours=1))
    set_sandbox_status(world.admin, world.tenant, "alpha", granted=granted, expires_in=expires)
    try:
        start = audit_sink.size
        _refused(lambda: c.get_object(Bucket=world.claims, Key="small.csv"), "AccessDenied", 403)
        _logged(audit_sink, start, reason)
    finally:
        set_sandbox_status(
            world.admin, world.tenant, "alpha", granted={world.claims: True, world.other: False}
        )


def test_credentials_die_with_their_pod(
    s3_url: str, world: World, audit_sink: SwitchableSink, surface: S3Surface
) -> None:
    ns = sandbox_namespace(world.tenant, "alpha")
    core = client.CoreV1Api(world.admin)
    core.create_namespaced_pod(
        ns,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "short-0"},
            "spec": {
                "serviceAccountName": "workload",
                "containers": [{"name": "main", "image": "registry.invalid/train:1"}],
            },
        },
    )
    c = _s3(s3_url, _credentials(s3_url, pod_token(world.admin, ns, "short-0")))
    assert c.head_object(Bucket=world.claims, Key="small.csv")["ContentLength"] > 0
    core.delete_namespaced_pod("short-0", ns, grace_period_seconds=0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_pod("short-0", ns)
        except ApiException as exc:
            if exc.status != 404:
                raise
            break
        time.sleep(0.1)
    start = audit_sink.size
    deadline = time.monotonic() + 30  # the API server's pod informer may lag a little
    while True:
        surface.gateway.reviewer.forget()  # the review cache bounds how late this bites
        try:
            c.head_object(Bucket=world.claims, Key="small.csv")
        except ClientError as exc:
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            break
        assert time.monotonic() < deadline, "the deleted pod's credentials still work"
        time.sleep(0.2)
    assert status == 403
    _refused(lambda: c.get_object(Bucket=world.claims, Key="small.csv"), "ExpiredToken", 403)
    refused = [
        e for e in audit_sink.entries_since(start) if e.details.get("reason") == "ExpiredToken"
    ]
    assert len(refused) == 2  # the HEAD that found out, and the GET


def test_tampered_signature_and_session_token(
    s3_url: str, world: World, audit_sink: SwitchableSink, alpha: dict[str, str]
) -> None:
    c = _s3(s3_url, alpha)

    def flip(request: Any, **_: Any) -> None:
        auth = request.headers["Authorization"]
        auth = auth.decode() if isinstance(auth, bytes) else auth
        last = "0" if auth[-1] != "0" else "1"
        request.headers["Authorization"] = auth[:-1] + last

    c.meta.events.register("before-send.s3.GetObject", flip)
    start = audit_sink.size
    _refused(
        lambda: c.get_object(Bucket=world.claims, Key="small.csv"), "SignatureDoesNotMatch", 403
    )
    entry = _logged(audit_sink, start, "SignatureDoesNotMatch")
    assert entry.actor.pod is None  # nothing about the sender was trusted
    forged = dict(alpha)
    token = forged["aws_session_token"]
    forged["aws_session_token"] = token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")
    start = audit_sink.size
    _refused(
        lambda: _s3(s3_url, forged).get_object(Bucket=world.claims, Key="small.csv"),
        "InvalidToken",
        403,
    )
    _logged(audit_sink, start, "InvalidToken")


def _capture(c: Any, operation: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    def keep(request: Any, **_: Any) -> None:
        sent.append(
            {
                "method": request.method,
                "url": request.url,
                "headers": dict(request.headers.items()),
            }
        )

    c.meta.events.register(f"before-send.s3.{operation}", keep)
    return sent


def _resend(
    request: dict[str, Any], body: bytes = b"", transport: httpx.HTTPTransport | None = None
) -> httpx.Response:
    headers = {
        k: (v.decode() if isinstance(v, bytes) else v) for k, v in request["headers"].items()
    }
    with httpx.Client(transport=transport, timeout=30) as http:
        return http.request(request["method"], request["url"], headers=headers, content=body)


def test_replayed_requests_are_refused(
    s3_url: str, world: World, audit_sink: SwitchableSink, alpha: dict[str, str]
) -> None:
    c = _s3(s3_url, alpha)
    puts = _capture(c, "PutObject")
    c.put_object(Bucket="outbox", Key="models/replayed.bin", Body=b"once")
    start = audit_sink.size
    again = _resend(puts[0], b"once")
    assert again.status_code == 403
    assert b"<Code>AccessDenied</Code>" in again.content
    _logged(audit_sink, start, "RequestReplayed")

    gets = _capture(c, "GetObject")
    assert c.get_object(Bucket=world.claims, Key="small.csv")["Body"].read()
    stamp = gets[0]["headers"]["X-Amz-Date"]
    stamp = stamp.decode() if isinstance(stamp, bytes) else stamp
    signed = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ")
    until = signed.replace(tzinfo=dt.UTC).timestamp() + READ_REPLAY_GRACE_SECONDS
    while time.time() <= until:  # an SDK's same-second duplicate passes; a replay does not
        time.sleep(0.1)
    start = audit_sink.size
    late = _resend(gets[0])
    assert late.status_code == 403
    assert late.content.count(world.objects["small.csv"]) == 0
    entry = _logged(audit_sink, start, "RequestReplayed")
    assert entry.details["key"] == "small.csv"


def test_skewed_clock_is_refused(
    s3_url: str,
    world: World,
    audit_sink: SwitchableSink,
    alpha: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    skewed = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=16)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: skewed)
    start = audit_sink.size
    _refused(
        lambda: _s3(s3_url, alpha).get_object(Bucket=world.claims, Key="small.csv"),
        "RequestTimeTooSkewed",
        403,
    )
    _logged(audit_sink, start, "RequestTimeTooSkewed")


def test_writes_outside_the_outbox_are_refused(
    s3_url: str, world: World, audit_sink: SwitchableSink, alpha: dict[str, str], s3: MinioServer
) -> None:
    c = _s3(s3_url, alpha)
    start = audit_sink.size
    _refused(
        lambda: c.put_object(Bucket=world.claims, Key="planted.csv", Body=b"x"), "AccessDenied", 403
    )
    _logged(audit_sink, start, "DatasetReadOnly")
    start = audit_sink.size
    _refused(lambda: c.get_object(Bucket="outbox", Key="models/x.bin"), "AccessDenied", 403)
    _logged(audit_sink, start, "OutboxWriteOnly")
    start = audit_sink.size
    _refused(
        lambda: c.put_object(Bucket="outbox", Key="../../escape.bin", Body=b"x"),
        "InvalidArgument",
        400,
    )
    _logged(audit_sink, start, "InvalidKey")
    store = s3.client()
    listed = store.list_objects_v2(Bucket=OUTBOX, Prefix="escape").get("KeyCount", 0)
    assert listed == 0
    assert "planted.csv" not in str(store.list_objects_v2(Bucket="gateway-datasets"))


@pytest.mark.parametrize(
    "key",
    ["../2024-secret/leak.txt", "dir/../small.csv", "dir//part-0001.bin", "a%2Fb", "./small.csv"],
)
def test_path_tricks_in_keys(
    s3_url: str, world: World, audit_sink: SwitchableSink, alpha: dict[str, str], key: str
) -> None:
    c = _s3(s3_url, alpha)
    start = audit_sink.size
    _refused(lambda: c.get_object(Bucket=world.claims, Key=key), "InvalidArgument", 400)
    entry = _logged(audit_sink, start, "InvalidKey")
    assert entry.actor.pod == f"sbx-{world.tenant}-alpha/train-0"


def test_other_operations_answer_not_implemented(
    s3_url: str, world: World, audit_sink: SwitchableSink, alpha: dict[str, str]
) -> None:
    c = _s3(s3_url, alpha)
    start = audit_sink.size
    _refused(lambda: c.list_objects(Bucket=world.claims), "NotImplemented", 501)
    _logged(audit_sink, start, "NotImplemented")
    start = audit_sink.size
    _refused(lambda: c.delete_object(Bucket=world.claims, Key="small.csv"), "AccessDenied", 403)
    _logged(audit_sink, start, "DatasetReadOnly")


def test_any_replica_verifies_the_credentials(
    replica_url: str, world: World, alpha: dict[str, str]
) -> None:
    body = _s3(replica_url, alpha).get_object(Bucket=world.claims, Key="small.csv")["Body"]
    assert body.read() == world.objects["small.csv"]


@pytest.fixture
def audit_down(audit_sink: SwitchableSink) -> Iterator[SwitchableSink]:
    """The audit log refusing every record, restored afterwards."""
    audit_sink.fail_after = 0
    try:
        yield audit_sink
    finally:
        audit_sink.fail_after = None


def test_no_audit_no_data(
    s3_url: str, world: World, alpha: dict[str, str], audit_down: SwitchableSink
) -> None:
    c = _s3(s3_url, alpha)
    err = _refused(
        lambda: c.get_object(Bucket=world.claims, Key="small.csv"), "ServiceUnavailable", 503
    )
    assert world.objects["small.csv"] not in str(err.response).encode()


def test_multipart_refusals(
    s3_url: str, world: World, audit_sink: SwitchableSink, alpha: dict[str, str]
) -> None:
    c = _s3(s3_url, alpha)
    start = audit_sink.size
    _refused(
        lambda: c.create_multipart_upload(Bucket=world.claims, Key="planted.bin"),
        "AccessDenied",
        403,
    )
    _logged(audit_sink, start, "DatasetReadOnly")
    start = audit_sink.size
    _refused(
        lambda: c.upload_part(
            Bucket="outbox", Key="models/m.bin", UploadId="../../x", PartNumber=1, Body=b"x"
        ),
        "NoSuchUpload",
        404,  # S3 API reference: NoSuchUpload is 404 Not Found
    )
    _logged(audit_sink, start, "NoSuchUpload")
    upload = c.create_multipart_upload(Bucket="outbox", Key="models/m.bin")["UploadId"]
    start = audit_sink.size
    _refused(
        lambda: c.complete_multipart_upload(
            Bucket="outbox",
            Key="models/m.bin",
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]},
        ),
        "InvalidPart",
        400,
    )
    _logged(audit_sink, start, "InvalidPart")
    c.put_object(Bucket="outbox", Key="models/taken.bin", Body=b"first")
    start = audit_sink.size
    _refused(
        lambda: c.create_multipart_upload(Bucket="outbox", Key="models/taken.bin"),
        "PreconditionFailed",
        409,
    )
    _logged(audit_sink, start, "ArtifactExists")
