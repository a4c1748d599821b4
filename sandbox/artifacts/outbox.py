"""Object storage of the export airlock: sandbox outboxes and registered destinations.

Each sandbox writes the artifacts it wants to export under ``<sandbox id>/outbox/`` in
one bucket that only the operator (and the dataset gateway, on the sandbox's behalf)
holds credentials for: workloads write through the gateway's ``PUT /v1/outbox/<path>``,
which derives the sandbox from the workload's token and never replaces an object. The
operator reads an artifact to compute its SHA-256, copies it to a destination bucket
registered by the platform, re-reads the copy to check the digest, and deletes it again
on revocation. Credentials live only in
:class:`OutboxSettings` (as secrets, never in reprs, logs or status).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from sandbox.errors import SandboxError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "ArtifactChanged",
    "ArtifactInfo",
    "ArtifactNotFound",
    "ArtifactStore",
    "ExportStorageError",
    "OutboxSettings",
    "RegisteredDestination",
    "outbox_key",
    "outbox_prefix",
]

_CHUNK = 1024 * 1024


class ExportStorageError(SandboxError):
    """Object storage did not answer as expected; usually worth retrying."""


class ArtifactNotFound(ExportStorageError):  # noqa: N818 - reads as what happened
    """The artifact is not in the outbox (yet)."""


class ArtifactChanged(ExportStorageError):  # noqa: N818 - reads as what happened
    """The artifact is no longer the object whose digest was checked and approved."""


class RegisteredDestination(BaseModel):
    """A destination bucket the platform allows exports to, with its attested region."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    region: str = Field(min_length=1)
    """Region-catalogue id of the bucket (attested; the policy decides on this one)."""
    endpoint: str | None = None
    """S3 endpoint of the bucket; unset means the outbox endpoint."""


class OutboxSettings(BaseModel):
    """Where outboxes live, the operator's credentials, and the registered destinations."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    bucket: str = Field(min_length=3, max_length=63)
    """Bucket holding every sandbox's outbox, under ``<sandbox id>/outbox/``."""
    endpoint: str | None = None
    """S3 endpoint URL (on-premise object store); unset means AWS."""
    region: str = "us-east-1"
    """S3 signing region."""
    access_key_id: SecretStr | None = None
    """Access key; unset means the default boto3 credential chain (IRSA, instance role)."""
    secret_access_key: SecretStr | None = None
    """Secret key paired with ``access_key_id``."""
    destinations: dict[str, RegisteredDestination] = Field(default_factory=dict)
    """Destination buckets exports may go to, by bucket name; any other is denied."""


def outbox_prefix(sandbox_id: str) -> str:
    """Key prefix of a sandbox's outbox: ``<sandbox id>/outbox/``."""
    return f"{sandbox_id}/outbox/"


def outbox_key(sandbox_id: str, path: str) -> str:
    """Key of artifact ``path`` in a sandbox's outbox: where the airlock looks for it.

    The dataset gateway writes there on a workload's behalf and the operator reads there
    for a ModelExport whose ``spec.artifact.path`` is ``path``; both use this function.
    """
    return outbox_prefix(sandbox_id) + path


@dataclass(frozen=True)
class ArtifactInfo:
    """What the operator observed of an object."""

    bucket: str
    key: str
    etag: str
    size: int
    sha256: str
    version_id: str | None = None

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


def _code(exc: Exception) -> str:
    response: dict[str, Any] = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return str(error.get("Code") or status or "")


class ArtifactStore:
    """Reads outboxes and writes registered destinations with the operator's credentials."""

    def __init__(self, settings: OutboxSettings, client: S3Client | None = None) -> None:
        """Use ``client`` if given (tests), else build one per endpoint from ``settings``."""
        self.settings = settings
        self._clients: dict[str | None, S3Client] = {}
        if client is not None:
            self._clients[settings.endpoint] = client

    def __repr__(self) -> str:
        return (
            f"ArtifactStore(bucket={self.settings.bucket!r}, endpoint={self.settings.endpoint!r})"
        )

    def _client(self, endpoint: str | None = None) -> S3Client:
        endpoint = endpoint or self.settings.endpoint
        if endpoint not in self._clients:
            import boto3
            from botocore.config import Config

            s = self.settings
            self._clients[endpoint] = boto3.session.Session().client(
                "s3",
                endpoint_url=endpoint,
                region_name=s.region,
                aws_access_key_id=s.access_key_id.get_secret_value() if s.access_key_id else None,
                aws_secret_access_key=(
                    s.secret_access_key.get_secret_value() if s.secret_access_key else None
                ),
                config=Config(
                    s3={"addressing_style": "path"},
                    retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5,
                    read_timeout=60,
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                ),
            )
        return self._clients[endpoint]

    def destination(self, bucket: str) -> RegisteredDestination | None:
        """The registered destination of that name, or None."""
        return self.settings.destinations.get(bucket)

    def _endpoint_of(self, bucket: str) -> str | None:
        registered = self.destination(bucket)
        return registered.endpoint if registered and registered.endpoint else None

    def inspect(self, bucket: str, key: str, *, if_match: str | None = None) -> ArtifactInfo:
        """Read the object through and return its ETag, size and SHA-256.

        Raises:
            ArtifactNotFound: no such object.
            ArtifactChanged: ``if_match`` is given and the object's ETag differs.
            ExportStorageError: anything else went wrong.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = self._client(self._endpoint_of(bucket))
        args: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if if_match:
            args["IfMatch"] = if_match
        try:
            response = s3.get_object(**args)
            digest = hashlib.sha256()
            size = 0
            body = response["Body"]
            try:
                for chunk in iter(lambda: body.read(_CHUNK), b""):
                    digest.update(chunk)
                    size += len(chunk)
            finally:
                body.close()
        except ClientError as exc:
            code = _code(exc)
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ArtifactNotFound(f"s3://{bucket}/{key} does not exist") from exc
            if code in ("PreconditionFailed", "412"):
                raise ArtifactChanged(f"s3://{bucket}/{key} changed (ETag differs)") from exc
            raise ExportStorageError(f"cannot read s3://{bucket}/{key}: {code}") from exc
        except BotoCoreError as exc:
            raise ExportStorageError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        return ArtifactInfo(
            bucket=bucket,
            key=key,
            etag=str(response.get("ETag", "")),
            size=size,
            sha256=digest.hexdigest(),
            version_id=response.get("VersionId"),
        )

    def release(
        self,
        source: ArtifactInfo,
        bucket: str,
        key: str,
        metadata: dict[str, str],
    ) -> ArtifactInfo:
        """Copy ``source`` to ``bucket/key`` if it is unchanged, then check the copy's digest.

        The server-side copy is conditional on the source's ETag; the copy is then read
        back and hashed. A copy whose digest is not ``source.sha256`` is deleted again.

        Raises:
            ArtifactChanged: the source changed, or the copy's digest differs.
            ArtifactNotFound: the source is gone.
            ExportStorageError: anything else went wrong.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        endpoint = self._endpoint_of(bucket)
        if (endpoint or self.settings.endpoint) != self.settings.endpoint:
            raise ExportStorageError(
                f"destination bucket {bucket} is on another endpoint; only same-endpoint "
                "releases are supported"
            )
        s3 = self._client()
        try:
            s3.copy(
                {"Bucket": source.bucket, "Key": source.key},
                bucket,
                key,
                ExtraArgs={
                    "CopySourceIfMatch": source.etag,
                    "MetadataDirective": "REPLACE",
                    "Metadata": metadata,
                },
            )
        except ClientError as exc:
            code = _code(exc)
            if code in ("PreconditionFailed", "412"):
                raise ArtifactChanged(
                    f"{source.uri} changed after its digest was checked; not released"
                ) from exc
            if code in ("NoSuchKey", "404", "NotFound"):
                raise ArtifactNotFound(f"{source.uri} does not exist") from exc
            raise ExportStorageError(
                f"copy of {source.uri} to s3://{bucket}/{key} failed: {code}"
            ) from exc
        except BotoCoreError as exc:
            raise ExportStorageError(f"copy of {source.uri} failed: {exc}") from exc
        copied = self.inspect(bucket, key)
        if copied.sha256 != source.sha256:
            self.remove(bucket, key, copied.version_id)
            raise ArtifactChanged(
                f"the copy at s3://{bucket}/{key} has sha256 {copied.sha256}, not the approved "
                f"{source.sha256}; removed, not released"
            )
        return copied

    def remove(self, bucket: str, key: str, version_id: str | None = None) -> None:
        """Delete the object (and the given version) and check that it is gone.

        Raises:
            ExportStorageError: the object could not be deleted or is still readable.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = self._client(self._endpoint_of(bucket))
        try:
            if version_id and version_id != "null":
                s3.delete_object(Bucket=bucket, Key=key, VersionId=version_id)
            s3.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise ExportStorageError(f"cannot delete s3://{bucket}/{key}: {exc}") from exc
        if self.exists(bucket, key):
            raise ExportStorageError(f"s3://{bucket}/{key} is still readable after deletion")

    def exists(self, bucket: str, key: str) -> bool:
        """Whether the object can be read.

        Raises:
            ExportStorageError: the answer was neither the object nor "not found".
        """
        from botocore.exceptions import BotoCoreError, ClientError

        s3 = self._client(self._endpoint_of(bucket))
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise ExportStorageError(f"cannot check s3://{bucket}/{key}: {_code(exc)}") from exc
        except BotoCoreError as exc:
            raise ExportStorageError(f"cannot check s3://{bucket}/{key}: {exc}") from exc
        return True
