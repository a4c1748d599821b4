"""The XML the S3 and STS surfaces answer, and the S3 error code of each refusal.

Pure functions, no I/O. Error codes are the ones S3 clients know; a refusal keeps the
HTTP status it is logged with, so the audit record and the client see the same answer.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from fastapi.responses import Response

__all__ = [
    "S3_NS",
    "STS_NS",
    "ListedObject",
    "error_xml",
    "list_buckets_xml",
    "list_objects_xml",
    "s3_code",
    "sts_credentials_xml",
    "sts_error_xml",
    "xml_response",
]

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
"""Namespace of S3 answers."""
STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"
"""Namespace of STS answers."""

_CODES: Mapping[str, str] = {
    # authorisation (403)
    "DatasetNotGranted": "AccessDenied",
    "SandboxExpired": "AccessDenied",
    "SandboxNotReady": "AccessDenied",
    "SandboxTerminating": "AccessDenied",
    "SandboxNotFound": "AccessDenied",
    "NotASandbox": "AccessDenied",
    "EndpointNotAllowed": "AccessDenied",
    "DatasetReadOnly": "AccessDenied",
    "OutboxWriteOnly": "AccessDenied",
    "DatasetNotFound": "NoSuchBucket",
    # the request (4xx)
    "InvalidKey": "InvalidArgument",
    "ObjectNotFound": "NoSuchKey",
    "RangeNotSatisfiable": "InvalidRange",
    "EmptyArtifact": "InvalidArgument",
    "ArtifactExists": "PreconditionFailed",
    "ArtifactTooLarge": "EntityTooLarge",
    "InvalidRequest": "InvalidRequest",
    # the gateway's dependencies (5xx)
    "TooManyWrites": "SlowDown",
    "RequestReplayed": "AccessDenied",
    "StorageUnavailable": "InternalError",
    "KubernetesUnavailable": "ServiceUnavailable",
    "AuditUnavailable": "ServiceUnavailable",
    "OutboxNotConfigured": "ServiceUnavailable",
}


def s3_code(reason: str) -> str:
    """The S3 error code for the gateway's refusal ``reason`` (S3 codes pass through)."""
    return _CODES.get(reason, reason)


def _xml(root: ET.Element) -> bytes:
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


def _add(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = str(text).lower() if isinstance(text, bool) else str(text)
    return child


def _iso(value: dt.datetime | None) -> str:
    value = value or dt.datetime.now(dt.UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def xml_response(
    body: bytes, status: int, headers: Mapping[str, str] | None = None, *, head: bool = False
) -> Response:
    """An XML answer (no body for HEAD)."""
    return Response(
        b"" if head else body,
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/xml",
    )


def error_xml(code: str, message: str, resource: str, request_id: str) -> bytes:
    """An S3 ``<Error>`` body."""
    root = ET.Element("Error")
    _add(root, "Code", code)
    _add(root, "Message", message)
    _add(root, "Resource", resource)
    _add(root, "RequestId", request_id)
    return _xml(root)


def sts_error_xml(code: str, message: str, request_id: str, *, sender: bool = True) -> bytes:
    """An STS ``<ErrorResponse>`` body."""
    root = ET.Element("ErrorResponse", xmlns=STS_NS)
    error = _add(root, "Error")
    _add(error, "Type", "Sender" if sender else "Receiver")
    _add(error, "Code", code)
    _add(error, "Message", message)
    _add(root, "RequestId", request_id)
    return _xml(root)


def sts_credentials_xml(  # noqa: PLR0913 - the fields of the answer, by keyword
    *,
    access_key_id: str,
    secret_access_key: str,
    session_token: str,
    expiration: float,
    subject: str,
    role_arn: str,
    session_name: str,
    audience: str,
    request_id: str,
) -> bytes:
    """The ``AssumeRoleWithWebIdentityResponse`` carrying the credentials."""
    root = ET.Element("AssumeRoleWithWebIdentityResponse", xmlns=STS_NS)
    result = _add(root, "AssumeRoleWithWebIdentityResult")
    creds = _add(result, "Credentials")
    _add(creds, "AccessKeyId", access_key_id)
    _add(creds, "SecretAccessKey", secret_access_key)
    _add(creds, "SessionToken", session_token)
    _add(creds, "Expiration", _iso(dt.datetime.fromtimestamp(expiration, dt.UTC)))
    _add(result, "SubjectFromWebIdentityToken", subject)
    user = _add(result, "AssumedRoleUser")
    _add(user, "Arn", f"{role_arn}/{session_name}")
    _add(user, "AssumedRoleId", f"{access_key_id}:{session_name}")
    _add(result, "Audience", audience)
    meta = _add(root, "ResponseMetadata")
    _add(meta, "RequestId", request_id)
    return _xml(root)


def list_buckets_xml(owner: str, buckets: Iterable[str]) -> bytes:
    """A ``ListAllMyBucketsResult``."""
    root = ET.Element("ListAllMyBucketsResult", xmlns=S3_NS)
    who = _add(root, "Owner")
    _add(who, "ID", owner)
    _add(who, "DisplayName", owner)
    listing = _add(root, "Buckets")
    created = _iso(None)
    for name in buckets:
        bucket = _add(listing, "Bucket")
        _add(bucket, "Name", name)
        _add(bucket, "CreationDate", created)
    return _xml(root)


@dataclass(frozen=True)
class ListedObject:
    """One object of a listing, its key relative to the dataset."""

    key: str
    size: int
    etag: str
    last_modified: dt.datetime | None


def list_objects_xml(  # noqa: PLR0913 - the fields of the answer, by keyword
    *,
    bucket: str,
    prefix: str,
    delimiter: str | None,
    max_keys: int,
    objects: Sequence[ListedObject],
    prefixes: Sequence[str],
    truncated: bool,
    continuation: str | None,
    next_continuation: str | None,
    start_after: str | None,
    url_encoded: bool,
) -> bytes:
    """A ``ListBucketResult`` of ``ListObjectsV2``; keys URL-encoded when asked."""

    def enc(text: str) -> str:
        return quote(text, safe="/") if url_encoded else text

    root = ET.Element("ListBucketResult", xmlns=S3_NS)
    _add(root, "Name", bucket)
    _add(root, "Prefix", enc(prefix))
    if delimiter:
        _add(root, "Delimiter", enc(delimiter))
    _add(root, "MaxKeys", max_keys)
    _add(root, "KeyCount", len(objects) + len(prefixes))
    _add(root, "IsTruncated", truncated)
    if url_encoded:
        _add(root, "EncodingType", "url")
    if continuation:
        _add(root, "ContinuationToken", continuation)
    if next_continuation:
        _add(root, "NextContinuationToken", next_continuation)
    if start_after:
        _add(root, "StartAfter", enc(start_after))
    for obj in objects:
        item = _add(root, "Contents")
        _add(item, "Key", enc(obj.key))
        _add(item, "LastModified", _iso(obj.last_modified))
        _add(item, "ETag", obj.etag)
        _add(item, "Size", obj.size)
        _add(item, "StorageClass", "STANDARD")
    for common in prefixes:
        _add(_add(root, "CommonPrefixes"), "Prefix", enc(common))
    return _xml(root)
