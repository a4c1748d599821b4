"""The key-provider interface: one key per sandbox, made idempotently, destroyed at the end.

Every provider answers the same three questions — make the sandbox's key (or return the
one already made), find it, destroy it — so the operator can crash and retry any step.
A :class:`KeyRef` names a key and is safe to show anywhere (status, events, logs); key
material never appears in a ``KeyRef``, an error message or a ``repr``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from sandbox.errors import SandboxError

__all__ = [
    "MANAGED_BY",
    "SANDBOX_LABEL",
    "DestructionOutcome",
    "KeyDestruction",
    "KeyIntegrityError",
    "KeyNotFoundError",
    "KeyProvider",
    "KeyProviderError",
    "KeyProviderUnavailable",
    "KeyRef",
    "KeyStateError",
    "crash_point",
    "validate_sandbox_id",
]

MANAGED_BY = "regsandbox"
"""Value of ``app.kubernetes.io/managed-by`` on everything regsandbox makes."""

SANDBOX_LABEL = "regsandbox.io/sandbox"
"""Label (and KMS tag) key carrying the sandbox id."""

_SANDBOX_ID = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SANDBOX_ID_MAX = 200


class KeyProviderError(SandboxError):
    """A key operation failed; the message names the sandbox and what to do next."""


class KeyProviderUnavailable(KeyProviderError):  # noqa: N818 - the name the operator matches on
    """The key service could not be reached or is overloaded; retrying later may succeed."""


class KeyNotFoundError(KeyProviderError):
    """The sandbox has no key: it was never made, or it has been destroyed."""


class KeyIntegrityError(KeyProviderError):
    """A stored (wrapped) key failed authentication: wrong KEK, tampering, or a moved key."""


class KeyStateError(KeyProviderError):
    """The key exists but is in a state the request cannot use (e.g. pending deletion)."""


def validate_sandbox_id(sandbox_id: str) -> str:
    """Return ``sandbox_id`` if it is a lower-case DNS label of at most 200 characters.

    The id ends up in KMS aliases, StorageClass names and file names, so it is kept to
    the characters all of them accept.
    """
    if len(sandbox_id) > _SANDBOX_ID_MAX or not _SANDBOX_ID.fullmatch(sandbox_id):
        raise KeyProviderError(
            f"invalid sandbox id {sandbox_id[:80]!r}: use lower-case letters, digits and '-', "
            f"starting and ending with a letter or digit, at most {_SANDBOX_ID_MAX} characters"
        )
    return sandbox_id


def crash_point(name: str) -> None:
    """Crash tests only: SIGKILL this process at ``name`` when ``REGSANDBOX_TEST_KILL_AT``
    names it. Points: ``pkcs11-after-generate`` (a new sandbox's token key exists, its
    wrapped data key is not stored), ``pkcs11-after-swap`` (a rotation stored the
    rewrapped key, the old token key is not destroyed), ``kms-after-create-key`` (a KMS
    key exists without its alias), ``kek-after-rewrap`` (a KEK rotation rewrapped one
    key and not the others). Unset — the default, and in every deployment — it does
    nothing."""
    if os.environ.get("REGSANDBOX_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A reference to one sandbox's key. Holds identifiers only, never key material.

    ``key_id`` is what status, events, audit entries and StorageClass parameters carry:
    a KMS key ARN for ``aws-kms``, a random ``local-…`` id for ``local``.
    """

    sandbox_id: str
    """The sandbox the key belongs to."""
    key_id: str
    """Identifier of the key, safe to show (never derived from the key material)."""
    provider: str
    """Name of the provider that made it: ``local``, ``aws-kms`` or ``pkcs11``."""
    region: str
    """Region the key lives in (for ``local``, the region recorded at creation)."""
    created_at: dt.datetime
    """When the key was made (UTC)."""

    def __repr__(self) -> str:
        return (
            f"KeyRef(sandbox_id={self.sandbox_id!r}, key_id={self.key_id!r}, "
            f"provider={self.provider!r}, region={self.region!r}, "
            f"created_at={self.created_at.isoformat()!r})"
        )


DestructionOutcome = Literal["destroyed", "scheduled", "already-scheduled", "absent"]
"""What a destroy call found and did.

- ``destroyed``: this call erased the key (``local``: wrapped key deleted; ``pkcs11``:
  token object destroyed);
- ``scheduled``: this call scheduled deletion (``aws-kms``: ScheduleKeyDeletion);
- ``already-scheduled``: deletion had already been scheduled by an earlier call;
- ``absent``: there was no key — never made, or destroyed earlier.
"""


@dataclass(frozen=True, slots=True)
class KeyDestruction:
    """The result of :meth:`KeyProvider.destroy`; every outcome counts as success."""

    sandbox_id: str
    """The sandbox whose key was destroyed."""
    provider: str
    """The provider that handled the request."""
    outcome: DestructionOutcome
    """What this call found and did."""
    key_id: str | None = None
    """The destroyed key, when one was found."""
    deletion_date: dt.datetime | None = None
    """When the key material is gone for good (``aws-kms``); ``None`` means now."""
    confirmation: str | None = None
    """The provider's own evidence that the key is gone, for the audit entry, as one
    sentence saying what was checked: ``pkcs11``, the token's ``C_FindObjects`` for the
    key found nothing after ``C_DestroyObject``; ``local``, the wrapped key read back from
    its store (the API server, uncached, for Secrets) was not there; ``aws-kms``, KMS's
    ``DescribeKey`` by ARN reports ``PendingDeletion`` and the ``DeletionDate``. Every
    provider fills it for every outcome; a check that fails raises instead."""

    @property
    def already_done(self) -> bool:
        """True when an earlier call (or no key at all) left nothing for this call to do."""
        return self.outcome in ("already-scheduled", "absent")


@runtime_checkable
class KeyProvider(Protocol):
    """Makes, finds and destroys the per-sandbox key. Every method is idempotent."""

    @property
    def name(self) -> str:
        """Provider name as configured: ``local``, ``aws-kms`` or ``pkcs11``."""
        ...

    def create(self, sandbox_id: str, region: str, tags: dict[str, str]) -> KeyRef:
        """Make the sandbox's key, or return the one already made (never a second key)."""
        ...

    def get(self, sandbox_id: str) -> KeyRef | None:
        """The sandbox's live key, or ``None`` when there is none."""
        ...

    def destroy(self, sandbox_id: str) -> KeyDestruction:
        """Destroy the sandbox's key; succeeds (and says so) when it is already gone."""
        ...
