"""The input model: names, durations, timestamps and lifetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from sandbox.errors import ConfigurationError
from sandbox.policy import Decision, PolicyInput
from sandbox.policy.manifests import Manifests, build_input
from sandbox.policy.model import ClusterFacts, Lifetime, parse_duration

from .inputs import baseline


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("720h", timedelta(hours=720)),
        ("90d", timedelta(days=90)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "10", "h", "10x", "10h junk", "-5h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_ttl_resolves_to_expiry_and_seconds() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    lifetime = Lifetime(ttl="48h").resolved(now)
    assert lifetime.seconds == 172800
    assert lifetime.model_dump(mode="json", by_alias=True)["expiresAt"] == "2026-01-03T00:00:00Z"


def test_expiry_is_normalised_to_utc_seconds() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    plus_two = timezone(timedelta(hours=2))
    lifetime = Lifetime(expiresAt=datetime(2026, 1, 2, 2, 0, 0, 999, tzinfo=plus_two)).resolved(now)
    assert lifetime.seconds == 86400
    assert lifetime.model_dump(mode="json", by_alias=True)["expiresAt"] == "2026-01-02T00:00:00Z"


def test_no_lifetime_is_unbounded() -> None:
    assert Lifetime().resolved(datetime.now(UTC)).seconds is None


def test_input_round_trips_in_camel_case_without_nulls() -> None:
    document = baseline()
    model = PolicyInput.model_validate(document)
    rego = model.to_rego()
    assert rego["tenant"]["attestations"] == {"supervisoryAuthority": "CSSF"}
    assert rego["cluster"]["keys"]["perSandbox"] is True
    assert rego["datasets"][0]["allowedPurposes"] == ["fraud"]
    assert "export" not in rego


def test_unknown_dataset_class_is_refused() -> None:
    document = baseline()
    document["datasets"][0]["personalData"] = "secret"
    with pytest.raises(ValueError, match="personalData"):
        PolicyInput.model_validate(document)


def test_decision_sorts_and_forces_deny_on_violation() -> None:
    decision = Decision.from_rego(
        {
            "allow": True,
            "violations": [
                {"code": "B", "msg": "m", "regulation": "r", "subject": "s"},
                {"code": "A", "msg": "m", "regulation": "r", "subject": "s"},
            ],
            "obligations": [],
        },
        "sha256:x",
    )
    assert decision.allow is False
    assert [v.code for v in decision.violations] == ["A", "B"]


@pytest.mark.parametrize("ttl", ["3000000d", "99999999999999999999w"])
def test_an_enormous_ttl_resolves_without_raising(ttl: str) -> None:
    # Year 9999 is the last instant a datetime holds; a longer ttl ends "never", with
    # seconds capped where JSON numbers stay exact, and policy refuses it.
    lifetime = Lifetime(ttl=ttl).resolved(datetime(2026, 12, 6, tzinfo=UTC))
    assert lifetime.expires_at is None
    assert lifetime.seconds is not None
    assert 3000000 * 86400 <= lifetime.seconds <= 2**53 - 1


def test_a_duration_too_long_for_timedelta_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("99999999999999999999w")


def _dataset_manifest(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "tx"},
        "spec": {
            "sector": "finance",
            "jurisdiction": "LU",
            "location": {"bucket": "bank", "region": "onprem:lu-national-1"},
            "allowedPurposes": ["fraud"],
            **spec,
        },
    }


def _manifests(**spec: object) -> Manifests:
    manifests = Manifests()
    for doc in (
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": "bank"},
            "spec": {"organisation": "B", "sector": "finance", "jurisdiction": "LU"},
        },
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Sandbox",
            "metadata": {"name": "s1", "namespace": "tenant-bank"},
            "spec": {
                "purpose": "fraud",
                "region": "onprem:lu-national-1",
                "lifetime": {"ttl": "7d"},
                "datasets": [{"name": "tx", "purpose": "fraud"}],
            },
        },
        _dataset_manifest(**spec),
    ):
        manifests.add(doc, "test")
    return manifests


@pytest.mark.parametrize(
    ("legacy", "identifiability", "category"),
    [
        ("none", "anonymous", "ordinary"),
        ("anonymised", "anonymous", "ordinary"),
        ("pseudonymised", "pseudonymised", "ordinary"),
        ("personal", "identified", "ordinary"),
        ("special-category", "identified", "special-category"),
    ],
)
def test_the_deprecated_class_maps_to_the_two_fields(
    legacy: str, identifiability: str, category: str
) -> None:
    cluster = ClusterFacts(region="onprem:lu-national-1")
    rego = build_input(_manifests(personalData=legacy), cluster).to_rego()
    dataset = rego["datasets"][0]
    assert (dataset["identifiability"], dataset["category"]) == (identifiability, category)
    assert rego["now"].endswith("Z")


def test_the_two_fields_are_required_and_must_agree_with_the_old_class() -> None:
    cluster = ClusterFacts(region="onprem:lu-national-1")
    with pytest.raises(ConfigurationError, match="identifiability and category"):
        build_input(_manifests(identifiability="pseudonymised"), cluster)
    with pytest.raises(ConfigurationError, match="drop personalData"):
        build_input(_manifests(personalData="pseudonymised", category="special-category"), cluster)
    rego = build_input(
        _manifests(identifiability="pseudonymised", category="special-category"), cluster
    ).to_rego()
    assert "personalData" not in rego["datasets"][0]
