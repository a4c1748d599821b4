"""The ``aws-kms`` key provider: one customer-managed KMS key per sandbox, via boto3.

The key is made in the sandbox's region with tags naming the sandbox, and found again
through the alias ``alias/regsandbox/<sandbox-id>``: that alias is what makes
:meth:`AwsKmsKeyProvider.create` idempotent across operator crashes. Destruction
schedules the key's deletion (the only way KMS deletes a key) and then removes the
alias, in that order, so a crash in between is finished by the next call.

A crash between CreateKey and CreateAlias leaves a key that no alias finds: an orphan.
Before it makes a key, :meth:`AwsKmsKeyProvider.create` sweeps the region for enabled
keys tagged for the sandbox (and managed by regsandbox) that no alias points to, adopts
the oldest (gives it the alias) and schedules the others for deletion, so the sandbox
ends with exactly one key however often the operator was killed.

The endpoint URL is configurable for tests (moto) and sovereign or private clouds.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from pydantic import BaseModel, ConfigDict, Field

from sandbox.keys.base import (
    MANAGED_BY,
    SANDBOX_LABEL,
    DestructionOutcome,
    KeyDestruction,
    KeyProviderError,
    KeyProviderUnavailable,
    KeyRef,
    KeyStateError,
    crash_point,
    validate_sandbox_id,
)

if TYPE_CHECKING:
    from mypy_boto3_kms.client import KMSClient
    from mypy_boto3_kms.type_defs import KeyMetadataTypeDef

__all__ = [
    "ALIAS_PREFIX",
    "PROVIDER_NAME",
    "AwsKmsKeyProvider",
    "AwsKmsSettings",
    "alias_name",
]

PROVIDER_NAME = "aws-kms"
"""The name this provider is configured by."""

ALIAS_PREFIX = "alias/regsandbox/"
"""Every sandbox key's alias starts with this."""

_UNAVAILABLE_CODES = frozenset(
    {
        "DependencyTimeoutException",
        "KMSInternalException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "LimitExceededException",
    }
)
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)

_log = structlog.get_logger("sandbox.keys.kms")

_T = TypeVar("_T")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def alias_name(sandbox_id: str) -> str:
    """The KMS alias of a sandbox's key: ``alias/regsandbox/<sandbox-id>``."""
    return f"{ALIAS_PREFIX}{validate_sandbox_id(sandbox_id)}"


class AwsKmsSettings(BaseModel):
    """How the ``aws-kms`` provider reaches KMS and how it deletes keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    regions: tuple[str, ...] = Field(min_length=1)
    """Regions sandbox keys may live in; ``get`` and ``destroy`` look in each of them."""
    endpoint_url: str | None = None
    """KMS endpoint, e.g. ``http://127.0.0.1:5000`` for moto or a sovereign-cloud URL;
    unset means the AWS default for each region."""
    pending_window_days: int = Field(default=7, ge=7, le=30)
    """Waiting period of ScheduleKeyDeletion, 7 to 30 days (KMS's own bounds)."""
    connect_timeout: float = Field(default=5.0, gt=0)
    """Seconds to wait for a connection to KMS."""
    read_timeout: float = Field(default=15.0, gt=0)
    """Seconds to wait for a KMS answer."""
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts per call, including the first (botocore's standard retry mode)."""
    description: str = "regsandbox per-sandbox volume key"
    """Description given to each key (the sandbox id is appended)."""


class AwsKmsKeyProvider:
    """The ``aws-kms`` :class:`~sandbox.keys.base.KeyProvider`.

    ``session`` defaults to a new :class:`boto3.Session` (the usual credential chain:
    environment, web identity / IRSA, instance profile).
    """

    def __init__(self, settings: AwsKmsSettings, *, session: boto3.Session | None = None) -> None:
        self._settings = settings
        self._session = session if session is not None else boto3.Session()
        self._clients: dict[str, KMSClient] = {}
        self._owners: dict[tuple[str, str], str | None] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"AwsKmsKeyProvider(regions={list(self._settings.regions)!r}, "
            f"endpoint_url={self._settings.endpoint_url!r})"
        )

    @property
    def name(self) -> str:
        """``aws-kms``."""
        return PROVIDER_NAME

    @property
    def settings(self) -> AwsKmsSettings:
        """The settings this provider was built with."""
        return self._settings

    def create(self, sandbox_id: str, region: str, tags: dict[str, str]) -> KeyRef:
        """Make the sandbox's KMS key and alias in ``region``, or return the existing key.

        Raises :class:`KeyStateError` if the sandbox's key is pending deletion or lives in
        another region, and :class:`KeyProviderUnavailable` if KMS cannot be reached.
        """
        alias = alias_name(sandbox_id)
        if region not in self._settings.regions:
            raise KeyProviderError(
                f"region {region!r} of sandbox {sandbox_id!r} is not configured for aws-kms "
                f"(configured: {', '.join(self._settings.regions)}); add it to the settings"
            )
        for other in self._settings.regions:
            found = self._describe_alias(other, alias, sandbox_id)
            if found is not None:
                return self._usable(found, other, sandbox_id, wanted_region=region)

        orphans = self._orphans(region, sandbox_id)
        if orphans:
            return self._adopt(orphans, region, alias, sandbox_id)
        client = self._client(region)
        all_tags = {**tags, SANDBOX_LABEL: sandbox_id, "app.kubernetes.io/managed-by": MANAGED_BY}
        created = self._call(
            "CreateKey",
            region,
            sandbox_id,
            lambda: client.create_key(
                Description=f"{self._settings.description}: {sandbox_id}",
                KeyUsage="ENCRYPT_DECRYPT",
                KeySpec="SYMMETRIC_DEFAULT",
                Tags=[{"TagKey": k, "TagValue": v} for k, v in sorted(all_tags.items())],
            ),
        )
        metadata = created["KeyMetadata"]
        crash_point("kms-after-create-key")
        try:
            self._call(
                "CreateAlias",
                region,
                sandbox_id,
                lambda: client.create_alias(AliasName=alias, TargetKeyId=metadata["KeyId"]),
            )
        except KeyProviderError as error:
            # Do not leave an unreachable key behind: schedule it for deletion, then either
            # adopt the key that won a concurrent create or report the failure.
            self._abandon(region, metadata["KeyId"], sandbox_id)
            winner = self._describe_alias(region, alias, sandbox_id)
            if winner is None:
                raise error from None
            return self._usable(winner, region, sandbox_id, wanted_region=region)
        _log.info("key.created", sandbox=sandbox_id, key_id=metadata["Arn"], provider=PROVIDER_NAME)
        return self._ref(metadata, region, sandbox_id)

    def _orphans(self, region: str, sandbox_id: str) -> list[KeyMetadataTypeDef]:
        """Enabled keys in ``region`` tagged for ``sandbox_id`` that no alias points to,
        oldest first: left by a crash between CreateKey and CreateAlias.

        KMS cannot search by tag, so this lists the aliases and the keys and reads the
        tags of keys without an alias; a key's owner (its tags never change) is
        remembered, so each key's tags are read once per process.
        """
        client = self._client(region)

        def aliased() -> set[str]:
            found: set[str] = set()
            for page in client.get_paginator("list_aliases").paginate():
                found.update(a["TargetKeyId"] for a in page["Aliases"] if "TargetKeyId" in a)
            return found

        def unaliased(targets: set[str]) -> list[str]:
            return [
                key["KeyId"]
                for page in client.get_paginator("list_keys").paginate()
                for key in page["Keys"]
                if key["KeyId"] not in targets
            ]

        targets = self._call("ListAliases", region, sandbox_id, aliased)
        candidates = self._call("ListKeys", region, sandbox_id, lambda: unaliased(targets))
        found: list[KeyMetadataTypeDef] = []
        for key_id in candidates:
            if self._owner(region, key_id, sandbox_id) != sandbox_id:
                continue
            metadata = self._describe(region, key_id, sandbox_id)
            if metadata["KeyState"] == "Enabled":
                found.append(metadata)
        return sorted(found, key=lambda m: (_utc(m.get("CreationDate")) or _EPOCH, m["KeyId"]))

    def _describe(self, region: str, key_id: str, sandbox_id: str) -> KeyMetadataTypeDef:
        client = self._client(region)
        answer = self._call(
            "DescribeKey", region, sandbox_id, lambda: client.describe_key(KeyId=key_id)
        )
        return answer["KeyMetadata"]

    def _owner(self, region: str, key_id: str, sandbox_id: str) -> str | None:
        """The sandbox a key was made for (its tags), or None for keys regsandbox did not make."""
        if (region, key_id) in self._owners:
            return self._owners[(region, key_id)]
        client = self._client(region)

        def tags() -> dict[str, str]:
            found: dict[str, str] = {}
            for page in client.get_paginator("list_resource_tags").paginate(KeyId=key_id):
                found.update({t["TagKey"]: t["TagValue"] for t in page.get("Tags", [])})
            return found

        try:
            found = self._call("ListResourceTags", region, sandbox_id, tags)
        except _NotFoundError:
            return None
        except KeyProviderError as error:
            if isinstance(error, KeyProviderUnavailable):
                raise
            return None  # e.g. a key in another account's grant we may not read: not ours
        owner = (
            found.get(SANDBOX_LABEL)
            if found.get("app.kubernetes.io/managed-by") == MANAGED_BY
            else None
        )
        self._owners[(region, key_id)] = owner
        return owner

    def _adopt(
        self, orphans: list[KeyMetadataTypeDef], region: str, alias: str, sandbox_id: str
    ) -> KeyRef:
        """Give the oldest orphan the sandbox's alias; schedule the others' deletion."""
        keep, extra = orphans[0], orphans[1:]
        for other in extra:
            self._abandon(region, other["KeyId"], sandbox_id)
        client = self._client(region)
        try:
            self._call(
                "CreateAlias",
                region,
                sandbox_id,
                lambda: client.create_alias(AliasName=alias, TargetKeyId=keep["KeyId"]),
            )
        except KeyProviderError:
            winner = self._describe_alias(region, alias, sandbox_id)  # a concurrent create
            if winner is None:
                raise
            if winner["KeyId"] != keep["KeyId"]:
                self._abandon(region, keep["KeyId"], sandbox_id)
            return self._usable(winner, region, sandbox_id, wanted_region=region)
        _log.warning(
            "key.adopted",
            sandbox=sandbox_id,
            key_id=keep["Arn"],
            provider=PROVIDER_NAME,
            discarded=len(extra),
        )
        return self._ref(keep, region, sandbox_id)

    def get(self, sandbox_id: str) -> KeyRef | None:
        """The sandbox's usable key, or ``None`` if it has none or it is pending deletion."""
        alias = alias_name(sandbox_id)
        for region in self._settings.regions:
            found = self._describe_alias(region, alias, sandbox_id)
            if found is not None and found["KeyState"] != "PendingDeletion":
                return self._ref(found, region, sandbox_id)
        return None

    def destroy(self, sandbox_id: str) -> KeyDestruction:
        """Schedule the key's deletion and remove its alias; idempotent."""
        alias = alias_name(sandbox_id)
        for region in self._settings.regions:
            found = self._describe_alias(region, alias, sandbox_id)
            if found is not None:
                return self._destroy_found(found, region, alias, sandbox_id)
        return KeyDestruction(
            sandbox_id=sandbox_id,
            provider=PROVIDER_NAME,
            outcome="absent",
            confirmation=(
                f"KMS DescribeKey({alias}) answered NotFoundException in "
                f"{', '.join(self._settings.regions)}"
            ),
        )

    def _destroy_found(
        self, found: KeyMetadataTypeDef, region: str, alias: str, sandbox_id: str
    ) -> KeyDestruction:
        client = self._client(region)
        arn, key_id = found["Arn"], found["KeyId"]
        outcome: DestructionOutcome
        if found["KeyState"] == "PendingDeletion":
            outcome, deletion_date = "already-scheduled", found.get("DeletionDate")
        else:
            try:
                answer = self._call(
                    "ScheduleKeyDeletion",
                    region,
                    sandbox_id,
                    lambda: client.schedule_key_deletion(
                        KeyId=key_id, PendingWindowInDays=self._settings.pending_window_days
                    ),
                )
                outcome, deletion_date = "scheduled", answer.get("DeletionDate")
            except KeyStateError:
                # Raced with another destroy: accept it if the key is now pending deletion.
                again = self._describe_alias(region, alias, sandbox_id)
                if again is None or again["KeyState"] != "PendingDeletion":
                    raise
                outcome, deletion_date = "already-scheduled", again.get("DeletionDate")
        self._delete_alias(region, alias, sandbox_id)
        confirmed_date, confirmation = self._confirm(region, arn, alias, sandbox_id)
        _log.info(
            "key.destroyed", sandbox=sandbox_id, key_id=arn, provider=PROVIDER_NAME, outcome=outcome
        )
        return KeyDestruction(
            sandbox_id=sandbox_id,
            provider=PROVIDER_NAME,
            outcome=outcome,
            key_id=arn,
            deletion_date=confirmed_date or _utc(deletion_date),
            confirmation=confirmation,
        )

    def _confirm(
        self, region: str, arn: str, alias: str, sandbox_id: str
    ) -> tuple[dt.datetime | None, str]:
        """Ask KMS again, by the key's ARN: it must be PendingDeletion with a DeletionDate.

        Returns that date and the evidence sentence; raises :class:`KeyStateError` when
        KMS reports another state (the teardown is then retried, never taken as done).
        """
        client = self._client(region)
        metadata = self._call(
            "DescribeKey", region, sandbox_id, lambda: client.describe_key(KeyId=arn)
        )["KeyMetadata"]
        state, date = metadata["KeyState"], _utc(metadata.get("DeletionDate"))
        if state != "PendingDeletion" or date is None:
            raise KeyStateError(
                f"KMS DescribeKey({arn}) in {region} reports KeyState={state} after "
                "ScheduleKeyDeletion; the key is NOT scheduled for deletion — retry"
            )
        alias_gone = self._describe_alias(region, alias, sandbox_id) is None
        confirmation = (
            f"KMS DescribeKey({arn}) in {region}: KeyState=PendingDeletion, "
            f"DeletionDate={date.isoformat()}; "
            + (f"{alias} no longer resolves" if alias_gone else f"{alias} still resolves")
        )
        return date, confirmation

    def _usable(
        self,
        metadata: KeyMetadataTypeDef,
        region: str,
        sandbox_id: str,
        *,
        wanted_region: str,
    ) -> KeyRef:
        if metadata["KeyState"] == "PendingDeletion":
            raise KeyStateError(
                f"the key of sandbox {sandbox_id!r} ({metadata['Arn']}) is pending deletion; "
                "finish destroying it (destroy) before creating the sandbox again"
            )
        if region != wanted_region:
            raise KeyStateError(
                f"sandbox {sandbox_id!r} already has key {metadata['Arn']} in region "
                f"{region!r}, not {wanted_region!r}; destroy it before moving the sandbox"
            )
        return self._ref(metadata, region, sandbox_id)

    def _ref(self, metadata: KeyMetadataTypeDef, region: str, sandbox_id: str) -> KeyRef:
        created = _utc(metadata.get("CreationDate")) or dt.datetime.now(dt.UTC)
        return KeyRef(
            sandbox_id=sandbox_id,
            key_id=metadata["Arn"],
            provider=PROVIDER_NAME,
            region=region,
            created_at=created,
        )

    def _describe_alias(
        self, region: str, alias: str, sandbox_id: str
    ) -> KeyMetadataTypeDef | None:
        client = self._client(region)
        try:
            answer = self._call(
                "DescribeKey", region, sandbox_id, lambda: client.describe_key(KeyId=alias)
            )
        except _NotFoundError:
            return None
        return answer["KeyMetadata"]

    def _delete_alias(self, region: str, alias: str, sandbox_id: str) -> None:
        client = self._client(region)
        with contextlib.suppress(_NotFoundError):
            self._call(
                "DeleteAlias", region, sandbox_id, lambda: client.delete_alias(AliasName=alias)
            )

    def _abandon(self, region: str, key_id: str, sandbox_id: str) -> None:
        client = self._client(region)
        try:
            self._call(
                "ScheduleKeyDeletion",
                region,
                sandbox_id,
                lambda: client.schedule_key_deletion(
                    KeyId=key_id, PendingWindowInDays=self._settings.pending_window_days
                ),
            )
        except KeyProviderError:
            _log.warning("key.orphaned", sandbox=sandbox_id, key_id=key_id, provider=PROVIDER_NAME)

    def _client(self, region: str) -> KMSClient:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                config = Config(
                    connect_timeout=self._settings.connect_timeout,
                    read_timeout=self._settings.read_timeout,
                    retries={"max_attempts": self._settings.max_attempts, "mode": "standard"},
                )
                client = self._session.client(
                    "kms",
                    region_name=region,
                    endpoint_url=self._settings.endpoint_url,
                    config=config,
                )
                self._clients[region] = client
            return client

    def _call(self, operation: str, region: str, sandbox_id: str, call: Callable[[], _T]) -> _T:
        """Run one KMS call, translating botocore errors into the key error tree."""
        where = f"KMS {operation} for sandbox {sandbox_id!r} in {region}"
        try:
            return call()
        except ClientError as error:
            code = str(error.response.get("Error", {}).get("Code", "Unknown"))
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if code == "NotFoundException":
                raise _NotFoundError(f"{where}: not found") from None
            if code == "KMSInvalidStateException":
                raise KeyStateError(f"{where}: the key is in the wrong state ({code})") from None
            if code in _UNAVAILABLE_CODES or status >= 500:
                raise KeyProviderUnavailable(
                    f"{where} failed with {code}; KMS is busy or failing, retry later"
                ) from None
            if code in ("AccessDeniedException", "UnrecognizedClientException"):
                raise KeyProviderError(
                    f"{where} was refused ({code}); grant the operator's role "
                    "kms:CreateKey, kms:CreateAlias, kms:DescribeKey, kms:TagResource, "
                    "kms:ScheduleKeyDeletion, kms:DeleteAlias, kms:ListKeys, kms:ListAliases "
                    "and kms:ListResourceTags"
                ) from None
            raise KeyProviderError(f"{where} failed with {code}") from None
        except _UNREACHABLE as error:
            raise KeyProviderUnavailable(
                f"{where}: cannot reach KMS ({type(error).__name__}); check the endpoint "
                "and the network, then retry"
            ) from None
        except NoCredentialsError:
            raise KeyProviderError(
                f"{where}: no AWS credentials; configure a role (IRSA) or credentials"
            ) from None
        except BotoCoreError as error:
            raise KeyProviderError(f"{where} failed ({type(error).__name__})") from None


class _NotFoundError(KeyProviderError):
    """KMS answered NotFoundException (handled inside this module)."""


def _utc(value: Any) -> dt.datetime | None:
    """A KMS timestamp as an aware UTC datetime (boto3 parses them already)."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
