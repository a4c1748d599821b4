"""API models: wire format, validation, conditions, and CRDs in step with the models."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import ValidationError

from sandbox.api import RESOURCES, SandboxSpec, TenantSpec, parse_duration, set_condition
from sandbox.api.crd import crd_filename, render


def test_committed_crds_are_generated_from_the_models(repo_root: Path) -> None:
    crds = repo_root / "charts/regsandbox/crds"
    for res in RESOURCES:
        path = crds / crd_filename(res)
        assert path.is_file(), f"{path} missing: run `python -m sandbox.api.crd`"
        assert path.read_text() == render(res), (
            f"{path} is stale: run `python -m sandbox.api.crd charts/regsandbox/crds`"
        )


def test_crd_schemas_are_structural() -> None:
    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node, where
            assert "title" not in node or "properties" in where, where
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")

    from sandbox.api.crd import generate_crd

    for res in RESOURCES:
        walk(generate_crd(res), res.kind)


def test_sandbox_spec_wire_round_trip() -> None:
    spec = SandboxSpec.model_validate(
        {
            "purpose": "credit-risk-model",
            "region": "lu-national-1",
            "lifetime": {"ttl": "30d"},
            "resources": {"cpu": 8, "memory": "32Gi"},
            "datasets": [{"name": "loans-2024", "purpose": "credit-risk-model"}],
        }
    )
    assert spec.resources.cpu == "8"
    wire = spec.wire()
    assert wire["lifetime"] == {"ttl": "30d", "onExpiry": "delete"}
    assert wire["datasets"][0]["purpose"] == "credit-risk-model"
    assert SandboxSpec.model_validate(wire) == spec


@pytest.mark.parametrize(
    ("lifetime", "message"),
    [
        ({}, "exactly one"),
        ({"ttl": "1d", "expiresAt": "2030-01-01T00:00:00Z"}, "exactly one"),
        ({"ttl": "tomorrow"}, "pattern"),
    ],
)
def test_invalid_lifetime_is_refused(lifetime: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SandboxSpec.model_validate({"purpose": "p", "region": "r", "lifetime": lifetime})


def test_negative_quantity_and_bad_jurisdiction_are_refused() -> None:
    with pytest.raises(ValidationError, match="pattern"):
        SandboxSpec.model_validate(
            {"purpose": "p", "region": "r", "lifetime": {"ttl": "1d"}, "resources": {"cpu": "-1"}}
        )
    with pytest.raises(ValidationError, match="jurisdiction"):
        TenantSpec.model_validate({"organisation": "x", "sector": "finance", "jurisdiction": "lux"})


def test_parse_duration() -> None:
    assert parse_duration("1w2d3h") == dt.timedelta(days=9, hours=3)
    assert parse_duration("90s") == dt.timedelta(seconds=90)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("5 days")


def test_set_condition_moves_transition_time_only_on_status_change() -> None:
    first = set_condition(
        None, "Ready", False, "Provisioning", "working", now="2026-01-01T00:00:00Z"
    )
    same = set_condition(first, "Ready", False, "StillProvisioning", now="2026-01-02T00:00:00Z")
    assert same[0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert same[0]["reason"] == "StillProvisioning"
    flipped = set_condition(same, "Ready", True, "Provisioned", now="2026-01-03T00:00:00Z")
    assert flipped[0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    both = set_condition(flipped, "Isolated", True, "NetworkPoliciesApplied", generation=3)
    assert [c["type"] for c in both] == ["Isolated", "Ready"]
    assert both[0]["observedGeneration"] == 3
