"""The export outbox write path: a workload stores an artifact where the airlock finds it.

A workload may write into its own sandbox's outbox only: the gateway derives the sandbox
from the token (never from the request) and the key from :func:`outbox_key`, the same
function the operator uses to find a ModelExport's artifact. Objects are never
replaced: once an artifact exists its bytes are fixed, so an export checked, reviewed
and released refers to the same bytes all along (the airlock also checks the digest).

How S3 behaves, and so how a write goes:

- a ``PutObject`` or ``CompleteMultipartUpload`` is the moment an object appears, whole;
  parts of an unfinished multipart upload are invisible to readers (and to the airlock);
- both take ``If-None-Match: *``, which makes the commit fail (412) if the key exists by
  then, so two writers racing for a name cannot replace each other's bytes;
- parts must be at least 5 MiB except the last, and there are at most 10,000.

So a body no larger than one part is buffered and stored with one conditional
``PutObject`` at commit; a larger one is uploaded part by part as it arrives and
committed with a conditional ``CompleteMultipartUpload``. Until :meth:`Upload.commit`
nothing is visible; :meth:`Upload.abort` drops whatever was uploaded. The caller logs
the write (with the SHA-256 computed here) before committing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from sandbox.api.export import ExportArtifact
from sandbox.artifacts.outbox import outbox_key
from sandbox.errors import SandboxError
from sandbox.gateway.authz import SandboxRef
from sandbox.gateway.objectkeys import InvalidKey, validate_key
from sandbox.gateway.s3 import StorageUnavailable
from sandbox.provision.names import sandbox_id

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = [
    "ArtifactExists",
    "ArtifactTooLarge",
    "EmptyArtifact",
    "OutboxNotConfigured",
    "OutboxWriter",
    "StoredArtifact",
    "TooManyWrites",
    "Upload",
    "validate_artifact_path",
]

MAX_PARTS = 10_000
"""Most parts of one S3 multipart upload."""


class ArtifactExists(SandboxError):  # noqa: N818 - the HTTP meaning, 409
    """An artifact of that name is already in the outbox; its bytes never change."""


class ArtifactTooLarge(SandboxError):  # noqa: N818 - the HTTP meaning, 413
    """The body is larger than the gateway's ``outbox_max_bytes``."""


class EmptyArtifact(SandboxError):  # noqa: N818 - the HTTP meaning, 400
    """The body is empty: an empty artifact would hold its name for good."""


class OutboxNotConfigured(SandboxError):  # noqa: N818 - the HTTP meaning, 503
    """The platform has not given this gateway an outbox bucket."""


class TooManyWrites(SandboxError):  # noqa: N818 - the HTTP meaning, 429
    """The gateway already holds as many writes as it may; try again shortly."""


def validate_artifact_path(path: str) -> str:
    """Return ``path`` if a ModelExport can name it as its artifact; else InvalidKey.

    The gateway's object-key rules (no absolute, empty, ``.`` or ``..`` segments, no
    control characters or escapes) and the ModelExport's own rules for
    ``spec.artifact.path`` (at most 900 characters of ``A-Za-z0-9!_.*'()-`` in
    ``/``-separated segments), so every artifact written can be exported.
    """
    validate_key(path)
    try:
        ExportArtifact(path=path)
    except ValidationError as exc:
        problem = exc.errors(include_input=False)[0]["msg"]
        raise InvalidKey(
            f"artifact path not allowed in a ModelExport ({problem}); use at most 900 "
            "characters of A-Z a-z 0-9 ! _ . * ' ( ) - in /-separated segments"
        ) from None
    return path


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _exists(exc: ClientError) -> bool:
    """Whether a conditional write failed because the key exists (or is being written)."""
    return _code(exc) in ("PreconditionFailed", "ConditionalRequestConflict") or _status(exc) in (
        409,
        412,
    )


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact as committed to the outbox."""

    bucket: str
    """Outbox bucket."""
    key: str
    """Full S3 key, ``<sandbox id>/outbox/<path>``."""
    size: int
    """Bytes stored."""
    sha256: str
    """Hex SHA-256 of those bytes."""
    etag: str
    """S3 ETag of the object."""


class Upload:
    """One artifact on its way into the outbox; not thread-safe, one caller at a time.

    :meth:`feed` only buffers (it can run on an event loop); :meth:`flush`,
    :meth:`finish`, :meth:`commit` and :meth:`abort` talk to S3 (run them in a thread).
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        *,
        max_bytes: int,
        part_bytes: int,
        metadata: Mapping[str, str],
    ) -> None:
        self.bucket = bucket
        """Outbox bucket."""
        self.key = key
        """Full S3 key being written."""
        self.size = 0
        """Bytes received so far."""
        self._s3 = s3
        self._max = max_bytes
        self._part = part_bytes
        self._metadata = dict(metadata)
        self._buffer = bytearray()
        self._hash = hashlib.sha256()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._finished = False
        self._state: Literal["open", "committed", "aborted"] = "open"

    def feed(self, data: bytes) -> bool:
        """Buffer ``data``; True when a part is full and :meth:`flush` should run.

        Raises:
            ArtifactTooLarge: the body has grown past the limit.
        """
        self.size += len(data)
        if self.size > self._max:
            raise ArtifactTooLarge(f"the artifact is larger than {self._max} bytes")
        self._buffer += data
        return len(self._buffer) >= self._part

    def flush(self) -> None:
        """Upload the buffered bytes as the next part (invisible until committed)."""
        if not self._buffer:
            return
        data, self._buffer = self._buffer, bytearray()  # handed over, not copied
        self._hash.update(data)  # hashlib releases the GIL on large buffers
        try:
            if self._upload_id is None:
                created = self._s3.create_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    ContentType="application/octet-stream",
                    Metadata=self._metadata,
                )
                self._upload_id = str(created["UploadId"])
            number = len(self._parts) + 1
            part = self._s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=cast(bytes, data),  # botocore takes a bytearray: no copy of the part
            )
        except ClientError as exc:
            raise StorageUnavailable(f"S3 upload failed: {_code(exc) or 'error'}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 upload failed: {type(exc).__name__}") from None
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})

    def finish(self) -> str:
        """The body has ended: upload what is left of a multipart body; its SHA-256.

        Raises:
            EmptyArtifact: nothing was received.
        """
        if self.size == 0:
            raise EmptyArtifact("the body is empty; send the artifact's bytes")
        if self._upload_id is not None:
            self.flush()
        else:
            self._hash.update(self._buffer)  # kept for the one PutObject at commit
        self._finished = True
        return self.sha256

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the whole body (once :meth:`finish` has run)."""
        if not self._finished:
            raise RuntimeError("finish() the upload first")
        return self._hash.hexdigest()

    def commit(self) -> StoredArtifact:
        """Make the object appear, unless its key exists by now.

        Raises:
            ArtifactExists: another write got there first (nothing of ours is left).
            StorageUnavailable: S3 failed (call :meth:`abort`).
        """
        digest = self.sha256
        try:
            if self._upload_id is None:
                etag = self._s3.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=cast(bytes, self._buffer),  # as above
                    ContentType="application/octet-stream",
                    Metadata=self._metadata,
                    IfNoneMatch="*",
                ).get("ETag", "")
            else:
                etag = self._s3.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                    IfNoneMatch="*",
                ).get("ETag", "")
        except ClientError as exc:
            if _exists(exc):
                raise ArtifactExists(
                    "an artifact of that name was written meanwhile; its bytes never change"
                ) from None
            raise StorageUnavailable(f"S3 commit failed: {_code(exc) or 'error'}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 commit failed: {type(exc).__name__}") from None
        self._state = "committed"
        self._buffer = bytearray()
        return StoredArtifact(self.bucket, self.key, self.size, digest, str(etag))

    @property
    def committed(self) -> bool:
        """Whether :meth:`commit` made the object appear."""
        return self._state == "committed"

    def abort(self) -> bool:
        """Drop what was uploaded, unless committed; False if S3 could not be told.

        Nothing of an aborted upload ever becomes visible. If S3 cannot be reached, the
        parts of an unfinished multipart upload stay (invisible) until the bucket's
        ``AbortIncompleteMultipartUpload`` lifecycle rule removes them.
        """
        self._buffer = bytearray()
        if self._state != "open":
            return True
        self._state = "aborted"
        if self._upload_id is None:
            return True
        try:
            self._s3.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id
            )
        except (ClientError, BotoCoreError):
            return False
        return True


class OutboxWriter:
    """Writes artifacts into sandbox outboxes with the gateway's storage credentials."""

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        *,
        max_bytes: int = 16 * 1024**3,
        part_bytes: int = 8 * 1024**2,
    ) -> None:
        if max_bytes > MAX_PARTS * part_bytes:
            raise ValueError("max_bytes exceeds 10,000 parts of part_bytes")
        self.bucket = bucket
        """The outbox bucket."""
        self.max_bytes = max_bytes
        """Largest artifact accepted, in bytes."""
        self.part_bytes = part_bytes
        """Part size of multipart uploads (and the most buffered per write)."""
        self._s3 = s3

    def __repr__(self) -> str:
        return f"OutboxWriter(bucket={self.bucket!r}, max_bytes={self.max_bytes})"

    @property
    def s3(self) -> S3Client:
        """The S3 client writes go through (thread-safe, shared)."""
        return self._s3

    def key(self, sandbox: SandboxRef, path: str) -> str:
        """The S3 key of ``path`` in ``sandbox``'s outbox (``path`` validated)."""
        return outbox_key(sandbox_id(sandbox.tenant, sandbox.sandbox), validate_artifact_path(path))

    def exists(self, key: str) -> bool:
        """Whether an object ``key`` exists (a cheap early check; commits re-check)."""
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageUnavailable(f"S3 HEAD failed: {_code(exc) or 'error'}") from None
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 HEAD failed: {type(exc).__name__}") from None
        return True

    def start(self, key: str, metadata: Mapping[str, str]) -> Upload:
        """A new upload of ``key`` carrying user ``metadata`` (``x-amz-meta-*``)."""
        return Upload(
            self._s3,
            self.bucket,
            key,
            max_bytes=self.max_bytes,
            part_bytes=self.part_bytes,
            metadata=metadata,
        )
