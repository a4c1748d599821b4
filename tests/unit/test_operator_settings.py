"""Operator settings refuse, at start-up, combinations that could only fail per sandbox."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from operators.settings import OperatorSettings

_BASE = {"cluster_region": "onprem:lu-national-1", "cluster_jurisdiction": "LU"}


@pytest.mark.parametrize(
    ("keys", "profile", "hint"),
    [
        ("aws-kms", {"kind": "longhorn"}, "with key_provider aws-kms use the aws-ebs"),
        ("local", {"kind": "aws-ebs"}, "set key_provider to aws-kms"),
    ],
)
def test_a_key_provider_the_storage_profile_cannot_use_is_refused(
    keys: str, profile: dict[str, str], hint: str
) -> None:
    with pytest.raises(ValidationError, match=hint):
        OperatorSettings(**_BASE, key_provider=keys, storage_profile=profile)  # type: ignore[arg-type]


def test_matching_keys_and_storage_are_accepted_and_the_gateway_port_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REGSANDBOX_GATEWAY_PORT", "9443")
    kms = OperatorSettings(**_BASE, key_provider="aws-kms", storage_profile={"kind": "aws-ebs"})  # type: ignore[arg-type]
    assert kms.storage_profile.kind == "aws-ebs"
    assert kms.gateway_port == 9443
    local = OperatorSettings(**_BASE)  # type: ignore[arg-type]
    assert (local.key_provider, local.storage_profile.kind) == ("local", "longhorn")
