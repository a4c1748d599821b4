"""Requests the law forbids, decided by both engines (embedded and a real OPA server).

Each case is derived from the article it cites, not from the policies: the input is
built through :class:`~sandbox.policy.PolicyInput` as the operator builds it, and every
per-dataset check is asked of both paths that put a dataset in reach of a sandbox
(``sandbox.provision`` and ``dataset.grant``), which must deny alike.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from sandbox.policy import EmbeddedEngine, OpaEngine, PolicyEngine, PolicyInput, PolicySet

from .inputs import LU, baseline, random_input

NOW = datetime(2026, 12, 6, tzinfo=UTC)

Document = dict[str, Any]


@pytest.fixture(scope="module")
def opa_engine(own_opa_url: str, policy_set: PolicySet) -> Iterator[OpaEngine]:
    engine = OpaEngine(own_opa_url, policy_set, timeout=5.0)
    yield engine
    engine.close()


@pytest.fixture(params=["embedded", "opa"])
def engine(
    request: pytest.FixtureRequest, embedded: EmbeddedEngine, opa_engine: OpaEngine
) -> PolicyEngine:
    return opa_engine if request.param == "opa" else embedded


def _resolved(document: Document) -> Document:
    """The document as the operator sends it: validated, lifetime resolved at NOW."""
    model = PolicyInput.model_validate(document)
    sandbox = model.sandbox.model_copy(update={"lifetime": model.sandbox.lifetime.resolved(NOW)})
    return model.model_copy(update={"sandbox": sandbox}).to_rego()


def _codes(engine: PolicyEngine, document: Document) -> set[str]:
    decision = engine.decide(_resolved(document))
    codes = {v.code for v in decision.violations}
    assert decision.allow == (not codes)
    return codes


def _both(engine: PolicyEngine, document: Document) -> tuple[set[str], set[str]]:
    """Violation codes of provisioning and of granting each dataset on its own."""
    provision = _codes(engine, {**document, "action": "sandbox.provision"})
    grant: set[str] = set()
    for request in document["sandbox"]["datasets"]:
        one = copy.deepcopy(document)
        one["action"] = "dataset.grant"
        one["sandbox"]["datasets"] = [request]
        one["datasets"] = [d for d in document["datasets"] if d["name"] == request["name"]]
        grant |= _codes(engine, one)
    return provision, grant


def hospital() -> Document:
    """A compliant health provisioning: pseudonymised ICU data under a data permit."""
    document = baseline()
    document["cluster"]["audit"]["retentionDays"] = 365
    document["tenant"] = {
        "name": "lux-hospital",
        "sector": "health",
        "jurisdiction": "LU",
        "attestations": {
            "ethicsApproval": "CNER-2025-017",
            "dataPermit": {
                "id": "HDAB-LU-2025-042",
                "purposes": ["sepsis"],
                "validUntil": "2035-12-31T23:59:59Z",
            },
        },
    }
    document["datasets"] = [
        {
            "name": "icu",
            "sector": "health",
            "jurisdiction": "LU",
            "location": {"bucket": "b", "region": LU},
            "personalData": "pseudonymised",
            "allowedPurposes": ["sepsis"],
        }
    ]
    document["sandbox"].update(
        purpose="sepsis",
        lifetime={"ttl": "720h"},
        datasets=[{"name": "icu", "purpose": "sepsis"}],
    )
    return document


def ministry() -> Document:
    """A compliant AI Act Art. 59 provisioning of a public body."""
    document = baseline()
    document["tenant"] = {
        "name": "lux-ministry",
        "sector": "public",
        "jurisdiction": "LU",
        "attestations": {"dpiaReference": "CNPD-DPIA-2025-003"},
    }
    document["datasets"] = [
        {
            "name": "claims",
            "sector": "public",
            "jurisdiction": "LU",
            "location": {"bucket": "b", "region": "onprem:lu-national-2"},
            "personalData": "personal",
            "allowedPurposes": ["triage"],
        }
    ]
    document["sandbox"].update(
        purpose="triage",
        lifetime={"ttl": "4380h"},
        datasets=[{"name": "claims", "purpose": "triage"}],
        publicInterest={"area": "public-administration", "whyNotAnonymised": "claims are linked"},
    )
    return document


def bank() -> Document:
    """A compliant finance provisioning (the shared baseline, lifetime as a ttl)."""
    document = baseline()
    document["sandbox"]["lifetime"] = {"ttl": "720h"}
    return document


@pytest.mark.parametrize("make", [hospital, ministry, bank])
def test_the_baselines_are_allowed_on_both_paths(
    engine: PolicyEngine, make: Callable[[], Document]
) -> None:
    assert _both(engine, make()) == (set(), set())


def test_pseudonymised_health_data_needs_a_data_permit(engine: PolicyEngine) -> None:
    # GDPR Recital 26 (still personal data), Art. 9(1) (health data), EHDS Art. 68.
    for sector in ("health", "research"):
        document = hospital()
        document["tenant"]["sector"] = sector
        del document["tenant"]["attestations"]["dataPermit"]
        provision, grant = _both(engine, document)
        assert "HEALTH_DATA_PERMIT_MISSING" in provision & grant


def test_special_category_data_needs_an_article_9_basis(engine: PolicyEngine) -> None:
    document = bank()
    document["datasets"][0]["personalData"] = "special-category"
    provision, grant = _both(engine, document)
    assert "SPECIAL_CATEGORY_BASIS_MISSING" in provision & grant
    document["tenant"]["attestations"]["specialCategoryBasis"] = {
        "condition": "9(2)(j)",
        "reference": "Loi du 1er août 2018, art. 65",
    }
    assert _both(engine, document) == (set(), set())


def test_a_grant_checks_the_permit_like_provisioning(engine: PolicyEngine) -> None:
    document = hospital()
    document["sandbox"]["lifetime"] = {"expiresAt": "2036-06-01T00:00:00Z"}
    provision, grant = _both(engine, document)
    assert "HEALTH_PERMIT_EXPIRES_BEFORE_SANDBOX" in provision & grant


def test_a_grant_checks_ai_act_article_59_like_provisioning(engine: PolicyEngine) -> None:
    document = ministry()
    document["sandbox"]["publicInterest"] = {"area": "marketing", "whyNotAnonymised": "x"}
    provision, grant = _both(engine, document)
    assert "PUBLIC_INTEREST_AREA_MISSING" in provision & grant


def test_purpose_limitation_holds_for_the_sandbox_and_each_request(engine: PolicyEngine) -> None:
    # GDPR Art. 5(1)(b): the sandbox's purpose must be allowed for each dataset ...
    document = bank()
    document["datasets"][0]["allowedPurposes"] = ["fraud", "marketing"]
    document["sandbox"]["purpose"] = "credit-scoring"
    provision, grant = _both(engine, document)
    assert "DATASET_SANDBOX_PURPOSE_NOT_ALLOWED" in provision & grant
    # ... and a sandbox cannot state another purpose for one dataset than its own.
    document["sandbox"]["purpose"] = "marketing"
    provision, grant = _both(engine, document)
    assert "DATASET_PURPOSE_MISMATCH" in provision & grant


@pytest.mark.parametrize("sector", ["health", "research", "space"])
def test_special_category_data_never_opens_egress_outside_eea(
    engine: PolicyEngine, sector: str
) -> None:
    document = hospital()
    document["tenant"]["sector"] = sector
    document["sandbox"]["egress"] = [{"cidr": "203.0.113.0/24", "region": "aws:us-east-1"}]
    provision, grant = _both(engine, document)
    assert "RESIDENCY_SPECIAL_CATEGORY_EGRESS" in provision & grant


def _export(document: Document, region: str, justification: str = "deploy") -> Document:
    document = copy.deepcopy(document)
    document["action"] = "model.export"
    document["export"] = {
        "name": "e1",
        "sandbox": "s1",
        "artifact": {"path": "m.onnx", "kind": "model"},
        "destination": {"region": region},
        "justification": justification,
        "requester": "alice",
    }
    return document


def test_exports_go_only_where_the_data_may_go(engine: PolicyEngine) -> None:
    assert "RESIDENCY_EXPORT_OUTSIDE_DATA_AREA" in _codes(
        engine, _export(ministry(), "onprem:de-hpc-1")
    )
    assert "RESIDENCY_EXPORT_OUTSIDE_EEA" in _codes(engine, _export(hospital(), "azure:uksouth"))
    assert _codes(engine, _export(ministry(), "onprem:lu-national-2")) == set()


def test_blank_justifications_are_missing(engine: PolicyEngine) -> None:
    document = ministry()
    document["sandbox"]["publicInterest"]["whyNotAnonymised"] = " \t\n "
    provision, grant = _both(engine, document)
    assert "PUBLIC_ANONYMISATION_JUSTIFICATION_MISSING" in provision & grant
    assert "EXPORT_JUSTIFICATION_MISSING" in _codes(engine, _export(ministry(), LU, "   "))


@pytest.mark.parametrize("ttl", ["3000000d", "9999999999d", "99999999999999999999w"])
def test_an_enormous_ttl_is_a_violation_not_an_error(engine: PolicyEngine, ttl: str) -> None:
    document = bank()
    document["sandbox"]["lifetime"] = {"ttl": ttl}
    provision, grant = _both(engine, document)
    assert "SANDBOX_LIFETIME_TOO_LONG" in provision & grant
    assert not any(code.startswith("POLICY_") for code in provision | grant)


def test_a_grant_never_denies_what_provisioning_allows(
    embedded: EmbeddedEngine, opa_engine: OpaEngine
) -> None:
    """Over generated inputs, each dataset's grant violations are among provisioning's."""
    rng = random.Random(20261206)  # noqa: S311 - seeded, reproducible test inputs
    for _ in range(60):
        document = random_input(rng)
        document["action"] = "sandbox.provision"
        provision = embedded.decide(document)
        assert provision == opa_engine.decide(document)
        for request in document["sandbox"].get("datasets", []):
            one = copy.deepcopy(document)
            one["action"] = "dataset.grant"
            one["sandbox"]["datasets"] = [request]
            one["datasets"] = [d for d in document["datasets"] if d["name"] == request["name"]]
            grant = embedded.decide(one)
            assert grant == opa_engine.decide(one)
            assert set(grant.violations) <= set(provision.violations), one
