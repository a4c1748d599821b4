"""Per-sandbox encryption keys: one key per sandbox, destroyed at the sandbox's end.

Three providers implement :class:`KeyProvider`: :class:`LocalKeyProvider` (data keys
wrapped with AES-GCM under an operator-held KEK), :class:`AwsKmsKeyProvider` (one
KMS key per sandbox, found through its alias) and :class:`Pkcs11KeyProvider` (one
non-extractable key per sandbox inside an HSM, reached over PKCS#11). Errors derive from
:class:`KeyProviderError`, itself a :class:`sandbox.errors.SandboxError`.

The ``aws-kms`` and ``pkcs11`` providers are imported on first use of their names
(boto3 and the PKCS#11 bindings cost an operator on the ``local`` provider ~10 MB).
"""

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from sandbox.keys.kms import AwsKmsKeyProvider, AwsKmsSettings, alias_name
    from sandbox.keys.pkcs11 import (
        Pkcs11KekRotation,
        Pkcs11KeyProvider,
        Pkcs11Settings,
        read_pin_file,
    )

_LAZY = {
    "AwsKmsKeyProvider": "sandbox.keys.kms",
    "AwsKmsSettings": "sandbox.keys.kms",
    "alias_name": "sandbox.keys.kms",
    "Pkcs11KekRotation": "sandbox.keys.pkcs11",
    "Pkcs11KeyProvider": "sandbox.keys.pkcs11",
    "Pkcs11Settings": "sandbox.keys.pkcs11",
    "read_pin_file": "sandbox.keys.pkcs11",
}

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


def __getattr__(name: str) -> Any:
    """Import a provider that needs an optional client library when first named."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
