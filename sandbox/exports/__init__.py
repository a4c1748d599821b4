"""The model export airlock: outbox storage and the admission policies for identities."""

from sandbox.exports.outbox import (
    ArtifactChanged,
    ArtifactInfo,
    ArtifactNotFound,
    ArtifactStore,
    ExportStorageError,
    OutboxSettings,
    RegisteredDestination,
    outbox_key,
    outbox_prefix,
)

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
