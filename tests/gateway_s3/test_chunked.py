"""aws-chunked uploads as SDKs send them by default: decoded, verified, refused when bad.

The AWS specification ("Signature Calculations for the Authorization Header:
Transferring Payload in Multiple Chunks") gives the frame of a chunk
(``<hex size>;chunk-signature=<sig>\\r\\n<data>\\r\\n``), the string each chunk signs
(``AWS4-HMAC-SHA256-PAYLOAD``, date, scope, previous signature, empty hash, chunk hash)
and a worked example, whose signatures the first test reproduces. The client side here
is written from that text; the gateway must accept what it says and refuse a chunk or a
checksum that was changed, with the S3 error and an audit entry, storing nothing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import s3fs
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import ClientError

from sandbox.devenv.minio import MinioServer
from sandbox.gateway.s3chunked import body_check
from sandbox.gateway.sigv4 import (
    BadRequest,
    SignatureRefused,
    parse_authorization,
    verify_signature,
)
from sandbox.provision.names import sandbox_id
from tests.gateway.conftest import SwitchableSink, World, sha256

from .conftest import OUTBOX, PodEnv

pytestmark = [pytest.mark.integration, pytest.mark.s3]

EMPTY = hashlib.sha256(b"").hexdigest()


# -- the AWS specification's example --------------------------------------------------

SPEC_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # the AWS docs' example key
SPEC_DATE = "20130524T000000Z"
SPEC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
SPEC_CHUNKS = (
    (b"a" * 65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (b"a" * 1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (b"", "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
)
SPEC_HEADERS = {
    "content-encoding": "aws-chunked",
    "content-length": "66824",
    "host": "s3.amazonaws.com",
    "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "x-amz-date": SPEC_DATE,
    "x-amz-decoded-content-length": "66560",
    "x-amz-storage-class": "REDUCED_REDUNDANCY",
}


def _spec_body(chunks: tuple[tuple[bytes, str], ...]) -> bytes:
    return b"".join(
        b"%x;chunk-signature=%s\r\n%s\r\n" % (len(data), sig.encode(), data) for data, sig in chunks
    )


def _decode(check: Any, body: bytes, piece: int) -> bytes:
    out = b"".join(b"".join(check.feed(body[i : i + piece])) for i in range(0, len(body), piece))
    check.finish()
    return out


def _spec_seed() -> Any:
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        "SignedHeaders=" + ";".join(sorted(SPEC_HEADERS)) + ",Signature=" + SPEC_SEED
    )
    return verify_signature(
        parse_authorization(auth),
        SPEC_SECRET,
        method="PUT",
        host_url="https://s3.amazonaws.com",
        raw_path="/examplebucket/chunkObject.txt",
        raw_query="",
        headers=SPEC_HEADERS,
        amz_date=SPEC_DATE,
    )


@pytest.mark.parametrize("piece", [1, 7, 4096, 1 << 20])
def test_the_specifications_example_decodes_in_any_pieces(piece: int) -> None:
    seed = _spec_seed()  # the example's seed signature verifies, with botocore
    assert seed.signature == SPEC_SEED
    check = body_check(SPEC_HEADERS, seed)
    assert _decode(check, _spec_body(SPEC_CHUNKS), piece) == b"a" * 66560


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b[:100] + b"b" + b[101:],  # one byte of the first chunk's data
        lambda b: b.replace(SPEC_CHUNKS[1][1].encode(), SPEC_CHUNKS[0][1].encode()),
        lambda b: b[: b.index(b"400;")] + b[b.index(b"0;chunk-signature=b6") :],  # chunk dropped
    ],
    ids=["data", "signature", "dropped"],
)
def test_a_changed_chunk_breaks_the_chain(tamper: Callable[[bytes], bytes]) -> None:
    check = body_check(SPEC_HEADERS, _spec_seed())
    with pytest.raises(SignatureRefused) as refused:
        _decode(check, tamper(_spec_body(SPEC_CHUNKS)), 4096)
    assert refused.value.reason == "SignatureDoesNotMatch"


# -- boto3 and s3fs defaults, over TLS ------------------------------------------------


def _outbox_object(s3: MinioServer, world: World, path: str) -> bytes:
    key = f"{sandbox_id(world.tenant, 'alpha')}/outbox/{path}"
    body: bytes = s3.client().get_object(Bucket=OUTBOX, Key=key)["Body"].read()
    return body


def _commits(audit_sink: SwitchableSink, start: int, path: str) -> list[Any]:
    return [
        e
        for e in audit_sink.entries_since(start)
        if e.action == "model.artifact.written"
        and e.details.get("phase") == "commit"
        and e.resource.name == path
    ]


def _text(request: Any) -> dict[str, str]:
    return {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()}


def test_boto3_and_s3fs_defaults_send_aws_chunked_with_a_crc_trailer(
    pod_env: PodEnv,
    world: World,
    audit_sink: SwitchableSink,
    s3: MinioServer,
    tls_gateway: tuple[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, ca = tls_gateway
    pod_env.use(world.token("alpha"), url=url)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(ca))
    run = uuid.uuid4().hex[:8]
    seen: list[dict[str, str]] = []
    c = boto3.Session().client("s3")  # no checksum setting: the SDK's defaults
    c.meta.events.register("before-send.s3.*", lambda request, **_: seen.append(_text(request)))
    start = audit_sink.size
    small = os.urandom(300_000)
    c.put_object(Bucket="outbox", Key=f"{run}/small.bin", Body=small)
    large = os.urandom(12 * 1024 * 1024)  # two parts
    c.upload_fileobj(io.BytesIO(large), "outbox", f"{run}/large.bin")
    streamed = [h for h in seen if h.get("X-Amz-Content-SHA256", "").startswith("STREAMING-")]
    assert {h["X-Amz-Content-SHA256"] for h in streamed} == {"STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
    assert len(streamed) == 3  # PutObject and both UploadParts
    assert all(h["X-Amz-Trailer"].startswith("x-amz-checksum-") for h in streamed)

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    with fs.open(f"outbox/{run}/s3fs.bin", "wb") as handle:
        handle.write(small[:1000])

    assert _outbox_object(s3, world, f"{run}/small.bin") == small
    assert _outbox_object(s3, world, f"{run}/large.bin") == large
    assert _outbox_object(s3, world, f"{run}/s3fs.bin") == small[:1000]
    # The audit log has the SHA-256 of the object, not of its aws-chunked encoding.
    for path, data in ((f"{run}/small.bin", small), (f"{run}/large.bin", large)):
        (commit,) = _commits(audit_sink, start, path)
        assert commit.details["sha256"] == sha256(data)
        assert commit.actor.pod == f"sbx-{world.tenant}-alpha/train-0"


# -- hand-made requests, from the specification ---------------------------------------


def _signed_headers(
    creds: ReadOnlyCredentials, url: str, headers: dict[str, str]
) -> dict[str, str]:
    """``headers`` plus X-Amz-Date and Authorization, signed over x-amz-content-sha256
    as given (botocore computes the signature, as the gateway does)."""
    amz_date = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    host = httpx.URL(url).netloc.decode()
    all_headers = {
        **{k.lower(): v for k, v in headers.items()},
        "host": host,
        "x-amz-date": amz_date,
        "x-amz-security-token": creds.token,
    }
    request = AWSRequest(method="PUT", url=url, headers=all_headers)
    request.context["timestamp"] = amz_date
    signer = S3SigV4Auth(Credentials(creds.access_key, creds.secret_key), "s3", "us-east-1")
    canonical = signer.canonical_request(request)
    signature = signer.signature(signer.string_to_sign(request, canonical), request)
    names = ";".join(sorted(all_headers))
    all_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{signer.credential_scope(request)},"
        f"SignedHeaders={names},Signature={signature}"
    )
    all_headers["x-regsandbox-scope"] = signer.credential_scope(request)
    all_headers["x-regsandbox-seed"] = signature
    return all_headers


def _chunk_signer(creds: ReadOnlyCredentials, headers: dict[str, str]) -> Callable[[str], str]:
    request = AWSRequest(method="PUT", url="http://x/")
    request.context["timestamp"] = headers["x-amz-date"]
    signer = S3SigV4Auth(Credentials(creds.access_key, creds.secret_key), "s3", "us-east-1")
    return lambda text: str(signer.signature(text, request))


def _signed_chunks(
    creds: ReadOnlyCredentials, headers: dict[str, str], chunks: list[bytes]
) -> bytes:
    sign = _chunk_signer(creds, headers)
    previous, out = headers["x-regsandbox-seed"], b""
    for data in [*chunks, b""]:
        previous = sign(
            "\n".join(
                (
                    "AWS4-HMAC-SHA256-PAYLOAD",
                    headers["x-amz-date"],
                    headers["x-regsandbox-scope"],
                    previous,
                    EMPTY,
                    hashlib.sha256(data).hexdigest(),
                )
            )
        )
        out += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(data), previous.encode(), data)
    return out


def _put(url: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    sent = {k: v for k, v in headers.items() if not k.startswith("x-regsandbox-")}
    return httpx.put(url, headers=sent, content=body, timeout=30)


@pytest.fixture
def creds(pod_env: PodEnv, world: World) -> ReadOnlyCredentials:
    pod_env.use(world.token("alpha"))
    found = boto3.Session().get_credentials()
    assert found is not None
    return found.get_frozen_credentials()


def _chunked_headers(decoded: int, payload: str, **extra: str) -> dict[str, str]:
    return {
        "content-encoding": "aws-chunked",
        "x-amz-content-sha256": payload,
        "x-amz-decoded-content-length": str(decoded),
        **extra,
    }


def test_signed_chunks_are_stored_decoded_and_a_changed_chunk_is_refused(
    creds: ReadOnlyCredentials,
    s3_url: str,
    world: World,
    audit_sink: SwitchableSink,
    s3: MinioServer,
) -> None:
    run = uuid.uuid4().hex[:8]
    chunks = [os.urandom(65536), os.urandom(65536), os.urandom(1000)]
    data = b"".join(chunks)
    start = audit_sink.size

    url = f"{s3_url}/outbox/{run}/signed.bin"
    headers = _signed_headers(
        creds, url, _chunked_headers(len(data), "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    )
    answer = _put(url, headers, _signed_chunks(creds, headers, chunks))
    assert answer.status_code == 200, answer.text
    assert _outbox_object(s3, world, f"{run}/signed.bin") == data
    (commit,) = _commits(audit_sink, start, f"{run}/signed.bin")
    assert commit.details["sha256"] == sha256(data)
    assert commit.details["bytes"] == len(data)

    url = f"{s3_url}/outbox/{run}/tampered.bin"
    headers = _signed_headers(
        creds, url, _chunked_headers(len(data), "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    )
    body = bytearray(_signed_chunks(creds, headers, chunks))
    body[70000] ^= 1  # one bit of the second chunk's data
    answer = _put(url, headers, bytes(body))
    assert answer.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in answer.text
    with pytest.raises(ClientError, match="NoSuchKey"):
        _outbox_object(s3, world, f"{run}/tampered.bin")
    (refused,) = [
        e
        for e in audit_sink.entries_since(start)
        if e.resource.name == f"{run}/tampered.bin" and e.outcome == "denied"
    ]
    assert refused.details["reason"] == "SignatureDoesNotMatch"
    assert refused.actor.pod == f"sbx-{world.tenant}-alpha/train-0"


def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_a_trailer_or_header_checksum_that_does_not_match_is_bad_digest(
    creds: ReadOnlyCredentials,
    s3_url: str,
    world: World,
    audit_sink: SwitchableSink,
    s3: MinioServer,
) -> None:
    run = uuid.uuid4().hex[:8]
    data = os.urandom(100_000)
    start = audit_sink.size

    def unsigned(path: str, checksum: str) -> httpx.Response:
        url = f"{s3_url}/outbox/{run}/{path}"
        headers = _signed_headers(
            creds,
            url,
            _chunked_headers(
                len(data),
                "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                **{"x-amz-trailer": "x-amz-checksum-crc32"},
            ),
        )
        body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n" % (
            len(data),
            data,
            checksum.encode(),
        )
        return _put(url, headers, body)

    assert unsigned("good.bin", _crc32(data)).status_code == 200
    assert _outbox_object(s3, world, f"{run}/good.bin") == data
    bad = unsigned("bad.bin", _crc32(data + b"x"))
    assert bad.status_code == 400
    assert "<Code>BadDigest</Code>" in bad.text
    with pytest.raises(ClientError, match="NoSuchKey"):
        _outbox_object(s3, world, f"{run}/bad.bin")

    # The same checksum as a header, on a plain body whose SHA-256 is signed.
    url = f"{s3_url}/outbox/{run}/header.bin"
    headers = _signed_headers(
        creds,
        url,
        {
            "x-amz-content-sha256": hashlib.sha256(data).hexdigest(),
            "x-amz-checksum-crc32": _crc32(b"other"),
        },
    )
    answer = _put(url, headers, data)
    assert answer.status_code == 400
    assert "<Code>BadDigest</Code>" in answer.text
    denied = [
        e.details["reason"]
        for e in audit_sink.entries_since(start)
        if e.action == "model.artifact.written" and e.outcome == "denied"
    ]
    assert denied == ["BadDigest", "BadDigest"]


def test_a_signed_trailer_is_verified(
    creds: ReadOnlyCredentials, s3_url: str, world: World, s3: MinioServer
) -> None:
    run = uuid.uuid4().hex[:8]
    data = os.urandom(5000)
    for path, trailer_value in (("ok.bin", _crc32(data)), ("bad.bin", _crc32(b"x"))):
        url = f"{s3_url}/outbox/{run}/{path}"
        headers = _signed_headers(
            creds,
            url,
            _chunked_headers(
                len(data),
                "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                **{"x-amz-trailer": "x-amz-checksum-crc32"},
            ),
        )
        chunks = _signed_chunks(creds, headers, [data])
        last = chunks.rsplit(b"chunk-signature=", 1)[1][:64].decode()
        trailer = f"x-amz-checksum-crc32:{trailer_value}\n".encode()
        signature = _chunk_signer(creds, headers)(
            "\n".join(
                (
                    "AWS4-HMAC-SHA256-TRAILER",
                    headers["x-amz-date"],
                    headers["x-regsandbox-scope"],
                    last,
                    hashlib.sha256(trailer).hexdigest(),
                )
            )
        )
        body = (
            chunks[:-2]  # the final chunk's CRLF is the trailer's
            + trailer.replace(b"\n", b"\r\n")
            + f"x-amz-trailer-signature:{signature}\r\n\r\n".encode()
        )
        answer = _put(url, headers, body)
        if path == "ok.bin":
            assert answer.status_code == 200, answer.text
            assert _outbox_object(s3, world, f"{run}/{path}") == data
        else:
            assert answer.status_code == 400, answer.text
            assert "<Code>BadDigest</Code>" in answer.text


def _crc64nvme_reference(data: bytes) -> str:
    """CRC-64/NVME bit by bit, from its definition (poly 0xAD93D23594C93659 reflected)."""
    crc = (1 << 64) - 1
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
    return base64.b64encode((crc ^ ((1 << 64) - 1)).to_bytes(8, "big")).decode()


def test_crc64nvme_trailers_as_arrows_sdk_sends_them() -> None:
    # The catalogue's check value of CRC-64/NVME over "123456789".
    assert base64.b64decode(_crc64nvme_reference(b"123456789")).hex() == "ae8b14860a799888"
    data = os.urandom(3000)
    headers = _chunked_headers(
        len(data),
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
        **{"x-amz-trailer": "x-amz-checksum-crc64nvme"},
    )
    for claimed, accepted in ((_crc64nvme_reference(data), True), (_crc32(data), False)):
        body = b"%x\r\n%s\r\n0\r\nx-amz-checksum-crc64nvme:%s\r\n\r\n" % (
            len(data),
            data,
            claimed.encode(),
        )
        check = body_check(headers, None)
        if accepted:
            assert _decode(check, body, 1000) == data
        else:
            with pytest.raises(BadRequest, match="did not match"):
                _decode(check, body, 1000)
