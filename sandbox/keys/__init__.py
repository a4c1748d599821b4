"""Per-sandbox encryption keys: one key per sandbox, destroyed at the sandbox's end.

Two providers implement :class:`KeyProvider`: :class:`LocalKeyProvider` (data keys
wrapped with AES-GCM under an operator-held KEK) and :class:`AwsKmsKeyProvider` (one
KMS key per sandbox, found through its alias). Errors derive from
:class:`KeyProviderError`, itself a :class:`sandbox.errors.SandboxError`.
"""

from sandbox.keys.base import (
    DestructionOutcome,
    KeyDestruction,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProvider,
    KeyProviderError,
    KeyProviderUnavailable,
    KeyRef,
    KeyStateError,
    validate_sandbox_id,
)
from sandbox.keys.kms import AwsKmsKeyProvider, AwsKmsSettings, alias_name
from sandbox.keys.local import (
    FileWrappedKeyStore,
    KekRotation,
    LocalKeyProvider,
    MemoryWrappedKeyStore,
    WrappedKeyStore,
    generate_kek,
    kek_id,
)

__all__ = [
    "AwsKmsKeyProvider",
    "AwsKmsSettings",
    "DestructionOutcome",
    "FileWrappedKeyStore",
    "KekRotation",
    "KeyDestruction",
    "KeyIntegrityError",
    "KeyNotFoundError",
    "KeyProvider",
    "KeyProviderError",
    "KeyProviderUnavailable",
    "KeyRef",
    "KeyStateError",
    "LocalKeyProvider",
    "MemoryWrappedKeyStore",
    "WrappedKeyStore",
    "alias_name",
    "generate_kek",
    "kek_id",
    "validate_sandbox_id",
]
