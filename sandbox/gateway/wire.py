"""What the gateway answers: the JSON bodies of its HTTP API and their OpenAPI notes.

camelCase on the wire, snake_case in Python, as for the API types in :mod:`sandbox.api`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

__all__ = [
    "BINARY",
    "ERRORS",
    "ArtifactWritten",
    "ErrorBody",
    "ObjectEntry",
    "ObjectList",
]


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorBody(_Wire):
    """Why a request was refused."""

    detail: str
    """What went wrong, for a person."""
    reason: str
    """CamelCase code, e.g. ``DatasetNotGranted``."""
    request_id: str
    """Id of the request in the audit log and the gateway's logs."""


class ObjectEntry(_Wire):
    """One object of a listing."""

    key: str
    """Key relative to the dataset."""
    size: int
    """Size in bytes."""
    etag: str
    """S3 ETag."""
    last_modified: datetime | None = None
    """When the object was last written."""


class ObjectList(_Wire):
    """One page of a dataset listing."""

    dataset: str
    """Dataset name."""
    prefix: str
    """The filter that was applied, relative to the dataset."""
    objects: list[ObjectEntry]
    """Objects in key order."""
    truncated: bool
    """Whether more objects follow; ask again with ``after=nextAfter``."""
    next_after: str | None = None
    """Key to pass as ``after`` for the next page."""


class ArtifactWritten(_Wire):
    """An artifact stored in the sandbox's outbox, ready to be named by a ModelExport."""

    path: str
    """The artifact path: ``spec.artifact.path`` of the ModelExport that exports it."""
    sandbox: str
    """The sandbox whose outbox holds it (the token's, never one the request names)."""
    size: int
    """Bytes stored."""
    sha256: str
    """Hex SHA-256 of the bytes; the export's ``status.sha256`` must be the same."""
    source: str
    """``s3://bucket/key`` of the object (the export's ``status.source``)."""
    request_id: str
    """Id of the write in the audit log and the gateway's logs."""


BINARY: dict[str, Any] = {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
}
"""OpenAPI content of a raw byte body."""

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Invalid object key, prefix or dataset name."),
        (401, "Missing, malformed or unacceptable token."),
        (
            403,
            "Sandbox not Ready, expired, or dataset not granted; or the dataset's S3 "
            "endpoint is not one the gateway may use.",
        ),
        (502, "Object storage failed."),
        (503, "Kubernetes or the audit log unavailable; nothing was sent."),
    )
}
"""OpenAPI responses every dataset operation may give."""
