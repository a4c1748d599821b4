"""Dataset objects in S3: read with credentials only the gateway holds.

One boto3 client per (endpoint, region), shared by every request (boto3 clients are
thread-safe). Reads are streamed: :meth:`Storage.open` returns an :class:`ObjectStream`
whose body is pulled chunk by chunk, so memory stays flat whatever the object size.
Only single byte ranges are served (``bytes=a-b``, ``bytes=a-``, ``bytes=-n``).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import SecretStr

from sandbox.api.dataset import DatasetLocation
from sandbox.api.meta import provider_region
from sandbox.errors import SandboxError
from sandbox.gateway.preconditions import (
    NotModified,
    PreconditionFailed,
    Preconditions,
    parse_http_date,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ByteRange",
    "EndpointNotAllowed",
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStream",
    "RangeNotSatisfiable",
    "Storage",
    "StorageUnavailable",
    "normalise_endpoint",
    "parse_range",
]

_RANGE = re.compile(r"^bytes=(\d{0,19})-(\d{0,19})$")


class StorageUnavailable(SandboxError):  # noqa: N818 - the HTTP meaning, 502
    """S3 failed or refused the gateway; the message never carries credentials."""


class EndpointNotAllowed(SandboxError):  # noqa: N818 - the HTTP meaning, 403
    """A dataset names an S3 endpoint the gateway may not send its credentials to."""


def normalise_endpoint(url: str) -> str:
    """``url`` with scheme and host lower-cased and no trailing slash, for comparison."""
    parts = urlsplit(url.strip())
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, "")
    )


class ObjectNotFound(SandboxError):  # noqa: N818 - the HTTP meaning, 404
    """No such object in the dataset."""


class RangeNotSatisfiable(SandboxError):  # noqa: N818 - the HTTP meaning, 416
    """The Range header is malformed, has several ranges, or lies outside the object."""

    def __init__(self, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


@dataclass(frozen=True)
class ByteRange:
    """One byte range as the client asked: ``start-end`` (inclusive), ``start-``, ``-suffix``."""

    start: int | None
    end: int | None

    def header(self) -> str:
        """The range as an HTTP ``Range`` value."""
        first = "" if self.start is None else str(self.start)
        last = "" if self.end is None else str(self.end)
        return f"bytes={first}-{last}"


def parse_range(value: str | None) -> ByteRange | None:
    """Parse a ``Range`` header; None when absent; RangeNotSatisfiable when not one range."""
    if value is None:
        return None
    match = _RANGE.match(value.strip())
    if not match:
        raise RangeNotSatisfiable("only one byte range of the form bytes=a-b is supported")
    first, last = match.group(1), match.group(2)
    if not first and not last:
        raise RangeNotSatisfiable("empty byte range")
    if not first:
        if int(last) == 0:
            raise RangeNotSatisfiable("a suffix range of zero bytes")
        return ByteRange(None, int(last))
    start, end = int(first), int(last) if last else None
    if end is not None and end < start:
        raise RangeNotSatisfiable("range end before its start")
    return ByteRange(start, end)


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata of an object."""

    size: int
    """Size of the whole object in bytes."""
    etag: str
    """S3 ETag, quoted."""
    last_modified: datetime | None
    """When the object was last written."""


class ObjectStream:
    """An object (or a range of it) being read; close it when done."""

    def __init__(self, response: dict[str, Any]) -> None:
        self._body = response["Body"]
        self.length: int = int(response["ContentLength"])
        """Bytes this stream will produce."""
        self.content_range: str | None = response.get("ContentRange")
        """``bytes a-b/size`` for a range read, else None."""
        self.etag: str = response.get("ETag", "")
        """S3 ETag of the whole object."""
        self.last_modified: datetime | None = response.get("LastModified")
        """When the object was last written."""

    @property
    def size(self) -> int:
        """Size of the whole object."""
        if self.content_range and "/" in self.content_range:
            total = self.content_range.rsplit("/", 1)[1]
            if total.isdigit():
                return int(total)
        return self.length

    def read(self, amount: int) -> bytes:
        """Up to ``amount`` bytes (fewer only at the end); StorageUnavailable on failure."""
        try:
            data: bytes = self._body.read(amount)
        except (BotoCoreError, OSError) as exc:
            raise StorageUnavailable(f"reading from S3 failed: {type(exc).__name__}") from None
        return data

    def close(self) -> None:
        """Release the connection (dropping it if the body was not read to the end)."""
        with contextlib.suppress(BotoCoreError, OSError):  # closing is best effort
            self._body.close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _raise_condition(exc: ClientError, conditions: Preconditions | None) -> None:
    """Raise the condition the store found false (it was sent one by
    :meth:`Preconditions.upstream`); return for any other error."""
    if conditions is None:
        return
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = _code(exc)
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    etag = str(headers.get("etag", ""))
    when = parse_http_date(headers.get("last-modified"))
    if status == 412 or code == "PreconditionFailed":
        raise PreconditionFailed(
            "If-Match names no current version of the object", etag, when
        ) from None
    if status == 304 or code == "304":
        raise NotModified("If-None-Match names the object's version", etag, when) from None


class Storage:
    """S3 access for the gateway."""

    def __init__(
        self,
        access_key_id: SecretStr | None = None,
        secret_access_key: SecretStr | None = None,
        *,
        max_connections: int = 64,
        timeout: float = 30.0,
        allowed_endpoints: Iterable[str] = (),
    ) -> None:
        self._keys = (access_key_id, secret_access_key)
        self._allowed = frozenset(normalise_endpoint(e) for e in allowed_endpoints)
        self._config = Config(
            max_pool_connections=max_connections,
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._clients: dict[tuple[str | None, str], S3Client] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Storage(endpoints={len(self._clients)})"  # never the keys

    def client(self, location: DatasetLocation) -> S3Client:
        """The (shared) S3 client for ``location``'s endpoint and region.

        Raises:
            EndpointNotAllowed: if ``location`` names an endpoint outside the allow-list
                (a location without endpoint means AWS and is always allowed).
        """
        if location.endpoint is not None and (
            normalise_endpoint(location.endpoint) not in self._allowed
        ):
            raise EndpointNotAllowed(
                "the dataset's S3 endpoint is not one the gateway may send its credentials to"
            )
        key = (location.endpoint, location.region)
        with self._lock:
            found = self._clients.get(key)
            if found is None:
                access, secret = self._keys
                found = boto3.session.Session().client(
                    "s3",
                    endpoint_url=location.endpoint,
                    region_name=provider_region(location.region),
                    aws_access_key_id=access.get_secret_value() if access else None,
                    aws_secret_access_key=secret.get_secret_value() if secret else None,
                    config=self._config,
                )
                self._clients[key] = found
            return found

    def head(
        self, location: DatasetLocation, key: str, conditions: Preconditions | None = None
    ) -> ObjectInfo:
        """Metadata of object ``key`` (a full S3 key).

        Raises:
            PreconditionFailed, NotModified: a condition is false for the object.
        """
        kwargs: dict[str, Any] = {"Bucket": location.bucket, "Key": key}
        if conditions is not None:
            kwargs.update(conditions.upstream())
        try:
            r = self.client(location).head_object(**kwargs)
        except ClientError as exc:
            _raise_condition(exc, conditions)
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFound("no such object") from None
            raise StorageUnavailable(f"S3 HEAD failed: {_code(exc) or 'error'}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 HEAD failed: {type(exc).__name__}") from None
        info = ObjectInfo(int(r["ContentLength"]), r.get("ETag", ""), r.get("LastModified"))
        if conditions is not None:
            conditions.check(info.etag, info.last_modified)
        return info

    def open(
        self,
        location: DatasetLocation,
        key: str,
        byte_range: ByteRange | None,
        conditions: Preconditions | None = None,
    ) -> ObjectStream:
        """Start reading object ``key`` (a full S3 key), or one range of it.

        ``conditions`` are evaluated against the ETag and Last-Modified of the answer
        whose body is returned (and ``If-Match`` is also sent to the store), so the
        stream is always of a version that satisfies them, even if the object is
        overwritten meanwhile. Conditions are decided before the range (RFC 9110
        §13.2.2): a false one wins over a range outside the object. With an
        ``If-Range`` that does not name the version read, the range is ignored and the
        whole object is returned (RFC 9110 §13.1.5).

        Raises:
            PreconditionFailed, NotModified: a condition is false (nothing is read).
        """
        kwargs: dict[str, Any] = {"Bucket": location.bucket, "Key": key}
        if byte_range is not None:
            kwargs["Range"] = byte_range.header()
        if conditions is not None:
            kwargs.update(conditions.upstream())
        try:
            response = self.client(location).get_object(**kwargs)
        except ClientError as exc:
            _raise_condition(exc, conditions)
            code = _code(exc)
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ObjectNotFound("no such object") from None
            if code == "InvalidRange":
                return self._unsatisfiable(location, key, conditions)
            raise StorageUnavailable(f"S3 GET failed: {code or 'error'}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 GET failed: {type(exc).__name__}") from None
        stream = ObjectStream(dict(response))
        if conditions is None:
            return stream
        try:
            conditions.check(stream.etag, stream.last_modified)
        except (PreconditionFailed, NotModified):
            stream.close()
            raise
        if byte_range is not None and not conditions.range_applies(
            stream.etag, stream.last_modified
        ):
            stream.close()  # If-Range names another version: send the whole object
            return self.open(location, key, None, conditions)
        return stream

    def _unsatisfiable(
        self, location: DatasetLocation, key: str, conditions: Preconditions | None
    ) -> ObjectStream:
        """After the store's InvalidRange: a false condition (raised), the whole object
        if ``If-Range`` names another version, else RangeNotSatisfiable with the size."""
        try:
            info = self.head(location, key, conditions)
        except (ObjectNotFound, StorageUnavailable):
            raise RangeNotSatisfiable("range outside the object") from None
        if conditions is not None and not conditions.range_applies(info.etag, info.last_modified):
            return self.open(location, key, None, conditions)
        raise RangeNotSatisfiable("range outside the object", info.size)

    def list(
        self, location: DatasetLocation, prefix: str, after: str | None, max_keys: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``max_keys`` objects under full S3 ``prefix`` after full key ``after``."""
        kwargs: dict[str, Any] = {"Bucket": location.bucket, "Prefix": prefix, "MaxKeys": max_keys}
        if after:
            kwargs["StartAfter"] = after
        try:
            r = self.client(location).list_objects_v2(**kwargs)
        except ClientError as exc:
            raise StorageUnavailable(f"S3 LIST failed: {_code(exc) or 'error'}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 LIST failed: {type(exc).__name__}") from None
        return [dict(o) for o in r.get("Contents", [])], bool(r.get("IsTruncated"))
