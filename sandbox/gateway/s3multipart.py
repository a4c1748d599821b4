"""Multipart uploads into the outbox over S3, with the REST write path's audit contract.

SDKs upload large files in parts, in parallel, possibly through different gateway
replicas; an outbox write must still be logged with its size and SHA-256 *before* the
object appears. So the gateway keeps nothing between requests and stages the parts in
S3, under the token's own sandbox (never a name the request gives):

- ``CreateMultipartUpload``: checks the artifact path and that it is not in the outbox
  yet; the upload id is random, and an empty marker object
  ``<sandbox id>/staging/<upload id>/upload`` records that the upload exists (until it
  is completed or aborted: then ``NoSuchUpload``, as S3 answers);
- ``UploadPart``: the part's body (its signed SHA-256 checked) is stored as the object
  ``<sandbox id>/staging/<upload id>/<part>`` of the outbox bucket, which the airlock
  never looks at; logged with its size and SHA-256;
- ``CompleteMultipartUpload``: the parts are read back in order and hashed, copied
  server-side into a real multipart upload of the artifact's key, the ``commit`` record
  (bytes, SHA-256, bucket, object) is made durable, and only then is that upload
  completed, with ``If-None-Match: *`` (an artifact is never replaced); the staged
  parts are deleted;
- ``AbortMultipartUpload``: deletes the staged parts.

Parts follow S3's rules (at least 5 MiB except the last, at most 10,000; else
``EntityTooSmall``) and are at most :data:`MAX_PART_BYTES`, held in memory while stored
(one write slot each). A part's ETag is the first 32 hex digits of its SHA-256; the
ETags ``CompleteMultipartUpload`` lists must be those (else ``InvalidPart``).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import xml.etree.ElementTree as ET
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import Request
from fastapi.responses import Response

from sandbox.gateway.auth import Identity
from sandbox.gateway.authz import SandboxRef
from sandbox.gateway.gateway import Gateway, to_thread
from sandbox.gateway.outbox import (
    MAX_PARTS,
    ArtifactExists,
    ArtifactTooLarge,
    OutboxNotConfigured,
    OutboxWriter,
    validate_artifact_path,
)
from sandbox.gateway.records import RequestRecord
from sandbox.gateway.s3 import ObjectNotFound, StorageUnavailable
from sandbox.gateway.s3xml import S3_NS, xml_response
from sandbox.gateway.sigv4 import BadRequest
from sandbox.provision.names import sandbox_id

__all__ = [
    "MAX_PART_BYTES",
    "MIN_PART_BYTES",
    "NoSuchUpload",
    "abort",
    "complete",
    "create",
    "upload_part",
]

MAX_PART_BYTES = 512 * 1024 * 1024
"""Largest part accepted (boto3 sends 8 MiB, s3fs 50 MiB)."""

MIN_PART_BYTES = 5 * 1024 * 1024
"""Smallest part S3 accepts, except for the last part of an upload."""

_MARKER = "upload"
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_MAX_COMPLETE_BODY = 1024 * 1024
_CHUNK = 8 * 1024 * 1024


class NoSuchUpload(ObjectNotFound):
    """The upload id names no upload in progress (never given, completed or aborted);
    404 ``NoSuchUpload``, as S3 answers."""

    reason = "NoSuchUpload"


def _outbox(gw: Gateway) -> OutboxWriter:
    if gw.outbox is None:
        raise OutboxNotConfigured(
            "this gateway has no export outbox; ask the platform team to configure one"
        )
    return gw.outbox


def _staging(ref: SandboxRef, upload_id: str) -> str:
    if not _UPLOAD_ID.match(upload_id):
        raise NoSuchUpload("the upload id is not one this gateway gave")
    return f"{sandbox_id(ref.tenant, ref.sandbox)}/staging/{upload_id}/"


def _ids(record: RequestRecord) -> dict[str, str]:
    return {"x-amz-request-id": record.request_id, "X-Request-Id": record.request_id}


def _xml(root: ET.Element) -> bytes:
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _fail(action: str, exc: Exception) -> StorageUnavailable:
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    return StorageUnavailable(f"S3 {action} failed: {code or type(exc).__name__}")


async def create(
    gw: Gateway, record: RequestRecord, identity: Identity, path: str, bucket: str
) -> Response:
    """``CreateMultipartUpload`` of artifact ``path``."""
    outbox = _outbox(gw)
    validate_artifact_path(path)
    ref = await gw.active_sandbox(record, identity)
    if await to_thread(outbox.exists, outbox.key(ref, path)):
        raise ArtifactExists(f"{path} is already in the outbox and is never replaced")
    upload_id = secrets.token_hex(16)
    marker = _staging(ref, upload_id) + _MARKER
    try:
        await to_thread(lambda: outbox.s3.put_object(Bucket=outbox.bucket, Key=marker, Body=b""))
    except (ClientError, BotoCoreError) as exc:
        raise _fail("upload", exc) from None
    root = ET.Element("InitiateMultipartUploadResult", xmlns=S3_NS)
    for tag, text in (("Bucket", bucket), ("Key", path), ("UploadId", upload_id)):
        ET.SubElement(root, tag).text = text
    body = _xml(root)
    event = record.event("success", "upload-started", status=200, allow=True, upload_id=upload_id)
    return await gw.log_then(record, event, lambda: xml_response(body, 200, _ids(record)))


async def upload_part(
    gw: Gateway,
    record: RequestRecord,
    identity: Identity,
    request: Request,
    upload_id: str,
    number: str,
) -> Response:
    """``UploadPart``: stage the body as part ``number`` of ``upload_id``."""
    outbox = _outbox(gw)
    validate_artifact_path(record.name)
    if not number.isdigit() or not 1 <= int(number) <= MAX_PARTS:
        raise BadRequest("InvalidArgument", f"partNumber must be between 1 and {MAX_PARTS}")
    ref = await gw.active_sandbox(record, identity)
    await to_thread(_check_upload, outbox, _staging(ref, upload_id))
    staged = _staging(ref, upload_id) + f"{int(number):05d}"
    with gw.write_slot():
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_PART_BYTES:
                raise ArtifactTooLarge(f"a part is larger than {MAX_PART_BYTES} bytes")
        digest = hashlib.sha256(data).hexdigest()
        try:
            await to_thread(
                lambda: outbox.s3.put_object(Bucket=outbox.bucket, Key=staged, Body=bytes(data))
            )
        except (ClientError, BotoCoreError) as exc:
            raise _fail("part upload", exc) from None
    facts: dict[str, Any] = {"part": int(number), "bytes": len(data), "sha256": digest}
    event = record.event("success", "part", status=200, allow=True, upload_id=upload_id, **facts)
    headers = {**_ids(record), "ETag": f'"{digest[:32]}"'}
    return await gw.log_then(record, event, lambda: Response(status_code=200, headers=headers))


def _check_upload(outbox: OutboxWriter, staging: str) -> None:
    """Raise :class:`NoSuchUpload` unless the upload under ``staging`` is in progress."""
    try:
        outbox.s3.head_object(Bucket=outbox.bucket, Key=staging + _MARKER)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            raise NoSuchUpload(
                "no such upload: it was never started, or was completed or aborted"
            ) from None
        raise _fail("upload lookup", exc) from None
    except BotoCoreError as exc:
        raise _fail("upload lookup", exc) from None


def _staged_sizes(outbox: OutboxWriter, staging: str) -> dict[int, int]:
    """The sizes of the parts staged under ``staging``, by part number; raises
    :class:`NoSuchUpload` if the upload is not in progress."""
    sizes: dict[int, int] = {}
    found = False
    try:
        pages = outbox.s3.get_paginator("list_objects_v2").paginate(
            Bucket=outbox.bucket, Prefix=staging
        )
        for page in pages:
            for obj in page.get("Contents", []):
                name = str(obj["Key"])[len(staging) :]
                if name == _MARKER:
                    found = True
                elif name.isdigit():
                    sizes[int(name)] = int(obj.get("Size", 0))
    except (ClientError, BotoCoreError) as exc:
        raise _fail("part listing", exc) from None
    if not found:
        raise NoSuchUpload("no such upload: it was never started, or was completed or aborted")
    return sizes


def _check_parts(sizes: dict[int, int], numbers: list[int]) -> None:
    """S3's checks of a part list against the staged parts: each was uploaded
    (``InvalidPart``), each but the last is at least :data:`MIN_PART_BYTES`
    (``EntityTooSmall``)."""
    for number in numbers:
        if number not in sizes:
            raise BadRequest("InvalidPart", f"part {number} was not uploaded")
    for number in numbers[:-1]:
        if sizes[number] < MIN_PART_BYTES:
            raise BadRequest(
                "EntityTooSmall",
                f"part {number} is smaller than {MIN_PART_BYTES} bytes and not the last",
            )


async def _parts(request: Request) -> list[tuple[int, str | None]]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_COMPLETE_BODY:
            raise BadRequest("MalformedXML", "the part list is too large")
    try:
        root = ET.fromstring(body)  # noqa: S314 - no DTDs or entities in expat by default
    except ET.ParseError:
        raise BadRequest("MalformedXML", "the part list is not XML") from None
    parts: list[tuple[int, str | None]] = []
    for part in root.iter():
        if part.tag.rsplit("}", 1)[-1] != "Part":
            continue
        fields = {c.tag.rsplit("}", 1)[-1]: (c.text or "").strip() for c in part}
        number = fields.get("PartNumber", "")
        if not number.isdigit():
            raise BadRequest("MalformedXML", "a part has no PartNumber")
        etag = fields.get("ETag")
        parts.append((int(number), etag.strip('"').lower() if etag is not None else None))
    numbers = [n for n, _ in parts]
    if not numbers or numbers != sorted(set(numbers)):
        raise BadRequest("InvalidPartOrder", "list the parts once each, in ascending order")
    return parts


def _assemble(
    outbox: OutboxWriter,
    staging: str,
    parts: list[tuple[int, str | None]],
    key: str,
    metadata: dict[str, str],
) -> tuple[str, int, str]:
    """Hash the staged parts in order and copy them into a new multipart upload of
    ``key``; the (uncompleted) upload id, the size and the SHA-256. Each listed ETag
    must be its part's (``InvalidPart``), each part but the last at least
    :data:`MIN_PART_BYTES` (``EntityTooSmall``)."""
    s3, bucket = outbox.s3, outbox.bucket
    _check_parts(_staged_sizes(outbox, staging), [number for number, _ in parts])
    digest, size = hashlib.sha256(), 0
    try:
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata=metadata)["UploadId"]
    except (ClientError, BotoCoreError) as exc:
        raise _fail("upload", exc) from None
    try:
        for index, (number, etag) in enumerate(parts, start=1):
            staged = f"{staging}{number:05d}"
            try:
                body = s3.get_object(Bucket=bucket, Key=staged)["Body"]
            except ClientError:
                raise BadRequest("InvalidPart", f"part {number} was not uploaded") from None
            part_digest, part_size = hashlib.sha256(), 0
            while chunk := body.read(_CHUNK):
                digest.update(chunk)
                part_digest.update(chunk)
                part_size += len(chunk)
            size += part_size
            if etag is not None and etag != part_digest.hexdigest()[:32]:
                raise BadRequest("InvalidPart", f"the ETag of part {number} is not that part's")
            if size > outbox.max_bytes:
                raise ArtifactTooLarge(f"the artifact is larger than {outbox.max_bytes} bytes")
            s3.upload_part_copy(
                Bucket=bucket,
                Key=key,
                UploadId=upload,
                PartNumber=index,
                CopySource={"Bucket": bucket, "Key": staged},
            )
    except (ClientError, BotoCoreError) as exc:
        _abort_quietly(outbox, key, upload)
        raise _fail("part copy", exc) from None
    except BaseException:
        _abort_quietly(outbox, key, upload)
        raise
    return upload, size, digest.hexdigest()


def _abort_quietly(outbox: OutboxWriter, key: str, upload: str) -> None:
    # If S3 cannot be told, the upload stays invisible until the bucket's
    # AbortIncompleteMultipartUpload lifecycle rule removes it.
    with contextlib.suppress(ClientError, BotoCoreError):
        outbox.s3.abort_multipart_upload(Bucket=outbox.bucket, Key=key, UploadId=upload)


def _drop_staging(outbox: OutboxWriter, staging: str) -> None:
    try:
        listed = outbox.s3.list_objects_v2(Bucket=outbox.bucket, Prefix=staging)
        for obj in listed.get("Contents", []):
            outbox.s3.delete_object(Bucket=outbox.bucket, Key=obj["Key"])
    except (ClientError, BotoCoreError):
        pass  # never read by the airlock; a lifecycle rule on staging/ removes leftovers


def _commit(outbox: OutboxWriter, key: str, upload: str, count: int) -> str:
    s3 = outbox.s3
    parts = s3.list_parts(Bucket=outbox.bucket, Key=key, UploadId=upload).get("Parts", [])
    if len(parts) != count:
        raise StorageUnavailable("S3 lost a part of the upload")
    try:
        done = s3.complete_multipart_upload(
            Bucket=outbox.bucket,
            Key=key,
            UploadId=upload,
            MultipartUpload={
                "Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in parts]
            },
            IfNoneMatch="*",
        )
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in (409, 412):
            raise ArtifactExists("an artifact of that name was written meanwhile") from None
        raise _fail("commit", exc) from None
    except BotoCoreError as exc:
        raise _fail("commit", exc) from None
    return str(done.get("ETag", ""))


async def complete(
    gw: Gateway,
    record: RequestRecord,
    identity: Identity,
    request: Request,
    upload_id: str,
    bucket: str,
) -> Response:
    """``CompleteMultipartUpload``: hash, log, then make the artifact appear."""
    outbox = _outbox(gw)
    validate_artifact_path(record.name)
    parts = await _parts(request)
    ref = await gw.active_sandbox(record, identity)
    staging = _staging(ref, upload_id)
    key = outbox.key(ref, record.name)
    metadata = {
        "regsandbox-request-id": record.request_id,
        "regsandbox-pod": identity.pod_ref or "",
    }
    with gw.write_slot():
        upload, size, digest = await to_thread(_assemble, outbox, staging, parts, key, metadata)
        facts: dict[str, Any] = {"bytes": size, "sha256": digest, "bucket": outbox.bucket}
        facts["object"] = key
        written = record.event("success", "commit", status=200, allow=True, **facts)
        if not await gw.append(record, written):
            await to_thread(_abort_quietly, outbox, key, upload)
            return gw.unavailable(record, "nothing was stored")
        try:
            etag = await to_thread(_commit, outbox, key, upload, len(parts))
        except (ArtifactExists, StorageUnavailable) as exc:
            await to_thread(_abort_quietly, outbox, key, upload)
            return await gw.refuse(record, exc, **facts)
    await to_thread(_drop_staging, outbox, staging)
    root = ET.Element("CompleteMultipartUploadResult", xmlns=S3_NS)
    for tag, text in (("Bucket", bucket), ("Key", record.name), ("ETag", etag)):
        ET.SubElement(root, tag).text = text
    body = _xml(root)
    return xml_response(body, 200, _ids(record))


async def abort(gw: Gateway, record: RequestRecord, identity: Identity, upload_id: str) -> Response:
    """``AbortMultipartUpload``: drop the staged parts."""
    outbox = _outbox(gw)
    ref = await gw.active_sandbox(record, identity)
    staging = _staging(ref, upload_id)
    await to_thread(_drop_staging, outbox, staging)
    event = record.event("success", "upload-aborted", status=204, allow=True, upload_id=upload_id)
    return await gw.log_then(record, event, lambda: Response(status_code=204, headers=_ids(record)))
