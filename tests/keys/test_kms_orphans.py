"""aws-kms: a crash between CreateKey and CreateAlias leaves an orphan key; the next create
of that sandbox adopts it (or, with several, keeps one and schedules the others' deletion).

Against moto's server (real HTTP); the crash is a real SIGKILL of a process at the
provider's ``kms-after-create-key`` crash point, or CreateAlias refused on the wire.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from sandbox.keys import AwsKmsKeyProvider, AwsKmsSettings, KeyProviderError, alias_name
from sandbox.keys.base import SANDBOX_LABEL

if TYPE_CHECKING:
    from mypy_boto3_kms.client import KMSClient

REGION = "eu-west-1"
MANAGED = "app.kubernetes.io/managed-by"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}

_CREATE = """
import sys
import boto3
from sandbox.keys import AwsKmsKeyProvider, AwsKmsSettings
settings = AwsKmsSettings(regions=(sys.argv[2],), endpoint_url=sys.argv[1])
session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
AwsKmsKeyProvider(settings, session=session).create(sys.argv[3], sys.argv[2], {})
"""


@pytest.fixture
def provider(moto_kms_endpoint: str) -> AwsKmsKeyProvider:
    settings = AwsKmsSettings(regions=(REGION,), endpoint_url=moto_kms_endpoint)
    return AwsKmsKeyProvider(settings, session=boto3.Session(**CREDENTIALS))


@pytest.fixture
def kms(moto_kms_endpoint: str) -> KMSClient:
    return boto3.Session(**CREDENTIALS).client(
        "kms", region_name=REGION, endpoint_url=moto_kms_endpoint
    )


def _sid() -> str:
    return f"sbx-orphan-{secrets.token_hex(4)}"


def _killed_create(endpoint: str, sid: str) -> None:
    """A process making the sandbox's key, SIGKILLed right after CreateKey."""
    run = subprocess.run(
        [sys.executable, "-c", _CREATE, endpoint, REGION, sid],
        env={**os.environ, "REGSANDBOX_TEST_KILL_AT": "kms-after-create-key"},
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == -9, run.stderr.decode()[-2000:]


def _keys_of(kms: KMSClient, sid: str) -> list[dict[str, Any]]:
    """Every key tagged for ``sid``, asked of KMS itself: (id, state)."""
    found = []
    for key in kms.list_keys()["Keys"]:
        tags = {
            t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]
        }
        if tags.get(SANDBOX_LABEL) == sid:
            metadata = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
            found.append({"id": metadata["KeyId"], "state": metadata["KeyState"]})
    return found


def test_a_kill_between_create_key_and_create_alias_is_finished_with_that_key(
    provider: AwsKmsKeyProvider, kms: KMSClient, moto_kms_endpoint: str
) -> None:
    sid = _sid()
    _killed_create(moto_kms_endpoint, sid)
    orphan = _keys_of(kms, sid)
    assert [k["state"] for k in orphan] == ["Enabled"]  # a key, and no alias finds it
    assert provider.get(sid) is None

    ref = provider.create(sid, REGION, {})
    assert ref.key_id.endswith(orphan[0]["id"])  # adopted, not a second key
    assert _keys_of(kms, sid) == orphan
    alias = kms.describe_key(KeyId=alias_name(sid))["KeyMetadata"]
    assert alias["KeyId"] == orphan[0]["id"]
    assert provider.create(sid, REGION, {}) == ref


def test_several_orphans_leave_one_enabled_key_and_the_rest_pending_deletion(
    provider: AwsKmsKeyProvider, kms: KMSClient, moto_kms_endpoint: str
) -> None:
    sid, bystander = _sid(), _sid()
    other = provider.create(bystander, REGION, {})
    unmanaged = kms.create_key(Tags=[{"TagKey": SANDBOX_LABEL, "TagValue": sid}])["KeyMetadata"]
    _killed_create(moto_kms_endpoint, sid)
    # A second one, as another crashed creator (racing the first) would have left it.
    managed = [
        {"TagKey": SANDBOX_LABEL, "TagValue": sid},
        {"TagKey": MANAGED, "TagValue": "regsandbox"},
    ]
    kms.create_key(Tags=managed)
    ref = provider.create(sid, REGION, {})
    keys = _keys_of(kms, sid)
    enabled = [k for k in keys if k["state"] == "Enabled" and k["id"] != unmanaged["KeyId"]]
    assert len(enabled) == 1
    assert ref.key_id.endswith(enabled[0]["id"])
    assert sorted(
        k["state"] for k in keys if k not in enabled and k["id"] != unmanaged["KeyId"]
    ) == ["PendingDeletion"]
    # A key regsandbox did not make (no managed-by tag), and another sandbox's, are untouched.
    assert kms.describe_key(KeyId=unmanaged["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    assert provider.get(bystander) == other


def test_create_alias_refused_then_the_next_create_adopts_the_orphan(
    kms: KMSClient, moto_kms_endpoint: str
) -> None:
    """CreateAlias fails on the wire and scheduling the orphan's deletion fails too (KMS
    went away between the calls): the next reconcile still ends with one key."""
    sid = _sid()
    session = boto3.Session(**CREDENTIALS)
    settings = AwsKmsSettings(regions=(REGION,), endpoint_url=moto_kms_endpoint, max_attempts=1)
    failing = AwsKmsKeyProvider(settings, session=session)
    client = failing._client(REGION)  # inject failures on this provider's own client

    def unreachable(**_: Any) -> None:
        raise EndpointConnectionError(endpoint_url=moto_kms_endpoint)

    client.meta.events.register("before-send.kms.CreateAlias", unreachable)
    client.meta.events.register("before-send.kms.ScheduleKeyDeletion", unreachable)
    with pytest.raises(KeyProviderError):
        failing.create(sid, REGION, {})
    orphan = _keys_of(kms, sid)
    assert [k["state"] for k in orphan] == ["Enabled"]

    recovered = AwsKmsKeyProvider(settings, session=session)
    ref = recovered.create(sid, REGION, {})
    assert ref.key_id.endswith(orphan[0]["id"])
    assert _keys_of(kms, sid) == orphan
