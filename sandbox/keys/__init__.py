"""Per-sandbox encryption keys: one key per sandbox, destroyed at the sandbox's end.

Three providers implement :class:`KeyProvider`: :class:`LocalKeyProvider` (data keys
wrapped with AES-GCM under an operator-held KEK), :class:`AwsKmsKeyProvider` (one
KMS key per sandbox, found through its alias) and :class:`Pkcs11KeyProvider` (one
non-extractable key per sandbox inside an HSM, reached over PKCS#11). Errors derive from
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
from sandbox.keys.kek_ring import FileKekRing, KekRing, KekSource, SecretKekRing
from sandbox.keys.kms import AwsKmsKeyProvider, AwsKmsSettings, alias_name
from sandbox.keys.local import (
    FileWrappedKeyStore,
    KekRotation,
    LocalKeyProvider,
    MemoryWrappedKeyStore,
    RewrappedKey,
    WrappedKeyStore,
    generate_kek,
    kek_id,
)
from sandbox.keys.pkcs11 import (
    Pkcs11KekRotation,
    Pkcs11KeyProvider,
    Pkcs11Settings,
    read_pin_file,
)

__all__ = [
    "AwsKmsKeyProvider",
    "AwsKmsSettings",
    "DestructionOutcome",
    "FileKekRing",
    "FileWrappedKeyStore",
    "KekRing",
    "KekRotation",
    "KekSource",
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
    "Pkcs11KekRotation",
    "Pkcs11KeyProvider",
    "Pkcs11Settings",
    "RewrappedKey",
    "SecretKekRing",
    "WrappedKeyStore",
    "alias_name",
    "generate_kek",
    "kek_id",
    "read_pin_file",
    "validate_sandbox_id",
]
