"""Model artifacts on their way out: the outbox store and the admission policies guarding it.

The reconcile of a ModelExport lives in :mod:`sandbox.lifecycle.exports`; this package only
stores what a sandbox wrote and says which identities may touch it.
"""

from sandbox.artifacts.outbox import (
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
