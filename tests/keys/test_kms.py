"""The aws-kms key provider against moto's server mode (a real HTTP endpoint, not a mock)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from moto.server import ThreadedMotoServer
from structlog.testing import capture_logs

from sandbox.api.sandbox import SandboxSpec
from sandbox.keys import (
    AwsKmsKeyProvider,
    AwsKmsSettings,
    KeyProvider,
    KeyProviderError,
    KeyProviderUnavailable,
    KeyStateError,
    alias_name,
)

if TYPE_CHECKING:
    from mypy_boto3_kms.client import KMSClient

SANDBOX = SandboxSpec.model_validate(
    {"purpose": "credit-risk-model", "region": "eu-west-1", "lifetime": {"ttl": "30d"}}
)
REGION = SANDBOX.region
OTHER_REGION = "eu-central-1"
TAGS = {"regsandbox.io/tenant": "acme-bank", "regsandbox.io/sector": "finance"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1 and a free port, for this module."""
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def session() -> boto3.Session:
    return boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def provider(kms_endpoint: str, session: boto3.Session) -> AwsKmsKeyProvider:
    settings = AwsKmsSettings(
        regions=(REGION, OTHER_REGION), endpoint_url=kms_endpoint, pending_window_days=7
    )
    return AwsKmsKeyProvider(settings, session=session)


@pytest.fixture
def kms(kms_endpoint: str, session: boto3.Session) -> KMSClient:
    """A plain boto3 client on the same server, to check what the provider did."""
    return session.client("kms", region_name=REGION, endpoint_url=kms_endpoint)


@pytest.fixture
def sandbox_id(request: pytest.FixtureRequest) -> str:
    """A sandbox id unique to the test (the moto server is shared by the module)."""
    return "acme-" + str(request.node.name).replace("_", "-").lower()[:60].strip("-")


def test_is_a_key_provider(provider: AwsKmsKeyProvider) -> None:
    assert isinstance(provider, KeyProvider)
    assert provider.name == "aws-kms"


def test_create_makes_a_tagged_key_with_an_alias_in_the_sandbox_region(
    provider: AwsKmsKeyProvider,
    kms: KMSClient,
    sandbox_id: str,
) -> None:
    ref = provider.create(sandbox_id, REGION, TAGS)
    assert ref.provider == "aws-kms"
    assert ref.region == REGION
    assert ref.key_id.startswith(f"arn:aws:kms:{REGION}:")
    assert ref.created_at.tzinfo is not None

    metadata = kms.describe_key(KeyId=alias_name(sandbox_id))["KeyMetadata"]
    assert metadata["Arn"] == ref.key_id
    assert metadata["KeyState"] == "Enabled"
    assert metadata["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert sandbox_id in metadata["Description"]

    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=ref.key_id)["Tags"]}
    assert tags == {
        **TAGS,
        "regsandbox.io/sandbox": sandbox_id,
        "app.kubernetes.io/managed-by": "regsandbox",
    }
    aliases = kms.list_aliases(KeyId=metadata["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in aliases] == [f"alias/regsandbox/{sandbox_id}"]


def test_create_is_idempotent(
    provider: AwsKmsKeyProvider,
    kms: KMSClient,
    sandbox_id: str,
) -> None:
    first = provider.create(sandbox_id, REGION, TAGS)
    second = provider.create(sandbox_id, REGION, TAGS)
    assert second == first
    keys_tagged = [
        key
        for key in kms.list_keys()["Keys"]
        if {"TagKey": "regsandbox.io/sandbox", "TagValue": sandbox_id}
        in kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]
    ]
    assert len(keys_tagged) == 1


def test_create_after_restart_finds_the_key_through_the_alias(
    provider: AwsKmsKeyProvider, kms_endpoint: str, session: boto3.Session, sandbox_id: str
) -> None:
    ref = provider.create(sandbox_id, REGION, TAGS)
    restarted = AwsKmsKeyProvider(provider.settings, session=session)
    assert restarted.get(sandbox_id) == ref
    assert restarted.create(sandbox_id, REGION, TAGS) == ref


def test_create_uses_the_region_it_is_given(provider: AwsKmsKeyProvider, sandbox_id: str) -> None:
    ref = provider.create(sandbox_id, OTHER_REGION, TAGS)
    assert ref.region == OTHER_REGION
    assert ":" + OTHER_REGION + ":" in ref.key_id
    assert provider.get(sandbox_id) == ref
    with pytest.raises(KeyStateError, match="destroy it before moving"):
        provider.create(sandbox_id, REGION, TAGS)


def test_create_in_an_unconfigured_region_is_refused(
    provider: AwsKmsKeyProvider, sandbox_id: str
) -> None:
    with pytest.raises(KeyProviderError, match="not configured"):
        provider.create(sandbox_id, "us-east-1", TAGS)


def test_get_of_an_unknown_sandbox_is_none(provider: AwsKmsKeyProvider) -> None:
    assert provider.get("acme-nobody") is None


def test_destroy_schedules_deletion_and_removes_the_alias(
    provider: AwsKmsKeyProvider,
    kms: KMSClient,
    sandbox_id: str,
) -> None:
    ref = provider.create(sandbox_id, REGION, TAGS)
    result = provider.destroy(sandbox_id)
    assert result.outcome == "scheduled"
    assert result.key_id == ref.key_id
    assert result.deletion_date is not None
    assert (result.deletion_date - ref.created_at).days >= 6

    metadata = kms.describe_key(KeyId=ref.key_id)["KeyMetadata"]
    assert metadata["KeyState"] == "PendingDeletion"
    assert not kms.list_aliases(KeyId=metadata["KeyId"])["Aliases"]
    assert provider.get(sandbox_id) is None


def test_destroy_is_idempotent(provider: AwsKmsKeyProvider, sandbox_id: str) -> None:
    provider.create(sandbox_id, REGION, TAGS)
    assert provider.destroy(sandbox_id).outcome == "scheduled"
    again = provider.destroy(sandbox_id)
    assert again.outcome == "absent"
    assert again.already_done


def test_destroy_resumes_after_a_crash_before_the_alias_was_deleted(
    provider: AwsKmsKeyProvider,
    kms: KMSClient,
    sandbox_id: str,
) -> None:
    """A key already PendingDeletion (alias still there) is accepted, and the alias goes."""
    ref = provider.create(sandbox_id, REGION, TAGS)
    key_id = kms.describe_key(KeyId=ref.key_id)["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)

    assert provider.get(sandbox_id) is None
    with pytest.raises(KeyStateError, match="pending deletion"):
        provider.create(sandbox_id, REGION, TAGS)

    result = provider.destroy(sandbox_id)
    assert result.outcome == "already-scheduled"
    assert result.key_id == ref.key_id
    assert provider.destroy(sandbox_id).outcome == "absent"


def test_destroy_of_a_never_created_key_succeeds(provider: AwsKmsKeyProvider) -> None:
    result = provider.destroy("acme-never-created")
    assert result.outcome == "absent"
    assert result.key_id is None


@pytest.mark.parametrize("days", [6, 31])
def test_pending_window_must_be_7_to_30_days(days: int) -> None:
    with pytest.raises(ValueError, match="pending_window_days"):
        AwsKmsSettings(regions=(REGION,), pending_window_days=days)


def test_unavailable_endpoint_raises_key_provider_unavailable(session: boto3.Session) -> None:
    settings = AwsKmsSettings(
        regions=(REGION,),
        endpoint_url=f"http://127.0.0.1:{_free_port()}",
        max_attempts=1,
        connect_timeout=1,
    )
    provider = AwsKmsKeyProvider(settings, session=session)
    with pytest.raises(KeyProviderUnavailable, match="cannot reach KMS") as caught:
        provider.create("acme-offline", REGION, TAGS)
    assert "acme-offline" in str(caught.value)
    with pytest.raises(KeyProviderUnavailable):
        provider.destroy("acme-offline")


def test_ref_repr_and_logs_show_ids_only(provider: AwsKmsKeyProvider, sandbox_id: str) -> None:
    with capture_logs() as logs:
        ref = provider.create(sandbox_id, REGION, TAGS)
        provider.destroy(sandbox_id)
    assert repr(ref) == (
        f"KeyRef(sandbox_id={sandbox_id!r}, key_id={ref.key_id!r}, provider='aws-kms', "
        f"region={REGION!r}, created_at={ref.created_at.isoformat()!r})"
    )
    assert [entry["event"] for entry in logs] == ["key.created", "key.destroyed"]
    assert all(entry["key_id"] == ref.key_id for entry in logs)
    assert "testing" not in repr(provider)
