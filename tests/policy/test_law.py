"""Requests the law forbids, decided by both engines (embedded and a real OPA server).

Each case is derived from the article it cites, not from the policies: the input is
built through :class:`~sandbox.policy.PolicyInput` as the operator builds it, and every
per-dataset check is asked of both paths that put a dataset in reach of a sandbox
(``sandbox.provision`` and ``dataset.grant``), which must deny alike.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from sandbox.policy import EmbeddedEngine, OpaEngine, PolicyEngine, PolicyInput, PolicySet

from .conftest import POLICY_DIR
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
    model = PolicyInput.model_validate({**document, "now": NOW})
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
                "datasets": ["icu"],
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
        publicInterest={
            "area": "public-administration",
            "whyNotAnonymised": "claims are linked",
            "monitoring": "weekly review by the DPO",
            "deletion": "deleted when the sandbox ends",
        },
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
    document["datasets"][0]["category"] = "special-category"
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


def survey(sector: str, identifiability: str = "pseudonymised") -> Document:
    """A tenant of ``sector`` holding ordinary (not special-category) personal data."""
    document = baseline()
    document["tenant"] = {
        "name": "lab",
        "sector": sector,
        "jurisdiction": "LU",
        "attestations": {
            "supervisoryAuthority": "CSSF",
            "dpiaReference": "CNPD-DPIA-2025-009",
            "ethicsApproval": "CNER-2025-017",
        },
    }
    document["datasets"] = [
        {
            "name": "survey",
            "sector": "research",
            "jurisdiction": "LU",
            "location": {"bucket": "b", "region": LU},
            "identifiability": identifiability,
            "category": "ordinary",
            "allowedPurposes": ["fraud"],
            "ictThirdParty": {"registerReference": "ROI-1", "dataLocations": ["LU"]},
        }
    ]
    document["sandbox"]["lifetime"] = {"ttl": "720h"}
    document["sandbox"]["datasets"] = [{"name": "survey", "purpose": "fraud"}]
    return document


SECTOR_NAMES = ["finance", "health", "public", "research", "space"]
US_EAST = "aws:us-east-1"


@pytest.mark.parametrize("identifiability", ["pseudonymised", "identified"])
@pytest.mark.parametrize("sector", SECTOR_NAMES)
def test_ordinary_personal_data_opens_no_egress_outside_eea_in_any_sector(
    engine: PolicyEngine, sector: str, identifiability: str
) -> None:
    """GDPR Art. 44: any transfer of personal data to a third country (Recital 26:
    pseudonymised included) needs adequacy (Art. 45) or safeguards (Art. 46)."""
    for entry in (
        {"cidr": "203.0.113.0/24", "region": US_EAST},
        {"cidr": "203.0.113.0/24", "region": "unknown:region"},
        {"cidr": "203.0.113.0/24"},
    ):
        document = survey(sector, identifiability)
        document["sandbox"]["egress"] = [entry]
        provision, grant = _both(engine, document)
        assert "RESIDENCY_PERSONAL_DATA_EGRESS" in provision & grant, entry
        assert "RESIDENCY_SPECIAL_CATEGORY_EGRESS" not in provision | grant


@pytest.mark.parametrize("sector", SECTOR_NAMES)
def test_ordinary_personal_data_may_reach_the_eea_and_adequacy_countries(
    engine: PolicyEngine, sector: str
) -> None:
    for region in ("aws:eu-central-1", "azure:uksouth"):
        document = survey(sector)
        document["sandbox"]["egress"] = [{"cidr": "203.0.113.0/24", "region": region}]
        provision, grant = _both(engine, document)
        assert "RESIDENCY_PERSONAL_DATA_EGRESS" not in provision | grant, region


def test_egress_of_personal_data_follows_the_transfer_rules(engine: PolicyEngine) -> None:
    """Art. 45 adequacy only while in force; Art. 46 SCCs and the DPF (for certified US
    recipients) only when declared and attested by the platform."""
    research = survey("research")
    research["sandbox"]["egress"] = [{"cidr": "203.0.113.0/24", "region": US_EAST}]
    anonymous = copy.deepcopy(research)
    anonymous["datasets"][0]["identifiability"] = "anonymous"
    assert _both(engine, anonymous) == (set(), set())

    uk = copy.deepcopy(research)
    uk["sandbox"]["egress"] = [{"cidr": "203.0.113.0/24", "region": "azure:uksouth"}]
    assert _both(engine, uk) == (set(), set())
    uk["sandbox"]["lifetime"] = {"expiresAt": "2032-06-01T00:00:00Z"}
    provision, grant = _both(engine, uk)
    assert "RESIDENCY_PERSONAL_DATA_EGRESS" in provision & grant

    scc = {"mechanism": "scc", "reference": "SCC 2021/914 module 2, C-7", "recipient": "S Inc."}
    declared = copy.deepcopy(research)
    declared["sandbox"]["egress"][0]["transfer"] = scc
    provision, grant = _both(engine, declared)
    assert provision == grant == {"RESIDENCY_PERSONAL_DATA_EGRESS"}
    declared["tenant"]["attestations"]["transfers"] = [{**scc, "country": "US"}]
    assert _both(engine, declared) == (set(), set())

    dpf = {"mechanism": "dpf", "reference": "DPF-1", "recipient": "S Inc.", "certified": True}
    certified = copy.deepcopy(research)
    certified["sandbox"]["egress"][0]["transfer"] = dpf
    certified["tenant"]["attestations"]["transfers"] = [{**dpf, "country": "US"}]
    assert _both(engine, certified) == (set(), set())
    canada = copy.deepcopy(certified)
    canada["sandbox"]["egress"][0]["region"] = "aws:ca-central-1"
    canada["tenant"]["attestations"]["transfers"] = [{**dpf, "country": "CA"}]
    provision, grant = _both(engine, canada)
    assert provision == grant == {"RESIDENCY_PERSONAL_DATA_EGRESS"}


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


# --- Part two: the input says what the law says --------------------------------------


def research(region: str, **dataset: Any) -> Document:
    """A research tenant reading one pseudonymised dataset stored in ``region``."""
    document = bank()
    document["tenant"] = {"name": "lab", "sector": "research", "jurisdiction": "LU"}
    document["datasets"][0].update(
        sector="research", location={"bucket": "b", "region": region}, **dataset
    )
    return document


def test_a_lawful_us_transfer_is_allowed_and_an_unlawful_one_names_the_gap(
    engine: PolicyEngine,
) -> None:
    scc = {"mechanism": "scc", "reference": "SCC 2021/914 M2 C-7", "recipient": "Survey Inc."}
    assert _both(engine, research("aws:us-east-1", transfer=scc)) == (set(), set())
    dpf = {
        "mechanism": "dpf",
        "reference": "DPF 123",
        "recipient": "Survey Inc.",
        "certified": True,
    }
    assert _both(engine, research("aws:us-east-1", transfer=dpf)) == (set(), set())
    # The DPF covers only the US; Canada's decision only PIPEDA organisations: SCCs it is.
    decision = engine.decide(
        _resolved({**research("aws:ca-central-1", transfer=dpf), "action": "dataset.grant"})
    )
    message = next(v.msg for v in decision.violations if v.code == "RESIDENCY_DATASET_OUTSIDE_EEA")
    assert "a US recipient" in message
    assert _both(engine, research("aws:ca-central-1", transfer=scc)) == (set(), set())
    uncertified = {**dpf, "certified": False}
    decision = engine.decide(
        _resolved({**research("aws:us-east-1", transfer=uncertified), "action": "dataset.grant"})
    )
    message = next(v.msg for v in decision.violations if v.code == "RESIDENCY_DATASET_OUTSIDE_EEA")
    assert "DPF certification" in message


def test_adequacy_decisions_count_while_in_force(engine: PolicyEngine) -> None:
    assert _both(engine, research("azure:uksouth")) == (set(), set())  # renewed to 2031
    assert _both(engine, research("aws:sa-east-1")) == (set(), set())  # Brazil, 2026
    beyond = research("azure:uksouth")
    beyond["sandbox"]["lifetime"] = {"expiresAt": "2032-01-31T00:00:00Z"}
    provision, grant = _both(engine, beyond)
    assert "RESIDENCY_DATASET_OUTSIDE_EEA" in provision & grant


def test_two_fields_say_what_the_old_class_could_not(engine: PolicyEngine) -> None:
    # "pseudonymised special-category" outside health needs an Art. 9(2) basis ...
    document = bank()
    document["datasets"][0].update(identifiability="pseudonymised", category="special-category")
    provision, grant = _both(engine, document)
    assert "SPECIAL_CATEGORY_BASIS_MISSING" in provision & grant
    # ... criminal-offence data an Art. 10 authorisation ...
    document["datasets"][0]["category"] = "criminal-offence"
    provision, grant = _both(engine, document)
    assert "CRIMINAL_OFFENCE_AUTHORISATION_MISSING" in provision & grant
    document["tenant"]["attestations"]["criminalOffenceAuthorisation"] = "Loi du 29 mars 2013"
    assert _both(engine, document) == (set(), set())
    # ... and the deprecated class still reads as before.
    legacy = bank()
    del legacy["datasets"][0]["identifiability"]
    del legacy["datasets"][0]["category"]
    legacy["datasets"][0]["personalData"] = "special-category"
    provision, grant = _both(engine, legacy)
    assert "SPECIAL_CATEGORY_BASIS_MISSING" in provision & grant


def test_a_permit_covers_only_what_it_names(engine: PolicyEngine) -> None:
    document = hospital()
    document["tenant"]["members"] = [
        {"user": "dr.alice", "role": "owner"},
        {"group": "icu-researchers", "role": "member"},
        {"user": "dr.bob", "role": "reviewer"},
    ]
    permit = document["tenant"]["attestations"]["dataPermit"]
    permit["users"] = ["dr.alice"]
    provision, grant = _both(engine, document)
    assert "HEALTH_PERMIT_USER_NOT_COVERED" in provision & grant
    permit["groups"] = ["icu-researchers"]
    assert _both(engine, document) == (set(), set())
    permit["datasets"] = ["other"]
    provision, grant = _both(engine, document)
    assert "HEALTH_PERMIT_DATASET_NOT_COVERED" in provision & grant
    permit["datasets"] = ["icu"]
    permit["validFrom"] = "2027-01-01T00:00:00Z"
    provision, grant = _both(engine, document)
    assert "HEALTH_PERMIT_NOT_YET_VALID" in provision & grant


def test_article_59_binds_any_participant_relying_on_it(engine: PolicyEngine) -> None:
    document = research(LU)
    document["sandbox"]["publicInterest"] = {"area": "public-health", "whyNotAnonymised": "x"}
    provision, grant = _both(engine, document)
    assert {
        "PUBLIC_DPIA_MISSING",
        "PUBLIC_MONITORING_MISSING",
        "PUBLIC_DELETION_COMMITMENT_MISSING",
    } <= provision & grant


def test_dora_register_and_contractual_location(engine: PolicyEngine) -> None:
    document = bank()
    del document["datasets"][0]["ictThirdParty"]
    provision, grant = _both(engine, document)
    assert {"FINANCE_ICT_REGISTER_MISSING", "FINANCE_DATA_LOCATION_NOT_CONTRACTED"} <= (
        provision & grant
    )
    document["datasets"][0]["ictThirdParty"] = {
        "registerReference": "ROI-1",
        "dataLocations": ["DE", "aws:eu-central-1"],
    }
    provision, grant = _both(engine, document)
    assert provision == grant == {"FINANCE_DATA_LOCATION_NOT_CONTRACTED"}


def test_special_category_egress_needs_a_transfer_the_platform_attested(
    engine: PolicyEngine,
) -> None:
    scc = {"mechanism": "scc", "reference": "SCC-9", "recipient": "Lab Inc."}
    document = hospital()
    document["sandbox"]["egress"] = [
        {"cidr": "203.0.113.0/24", "region": "aws:us-east-1", "transfer": scc}
    ]
    provision, grant = _both(engine, document)
    assert "RESIDENCY_SPECIAL_CATEGORY_EGRESS" in provision & grant
    document["tenant"]["attestations"]["transfers"] = [{**scc, "country": "US"}]
    assert _both(engine, document) == (set(), set())


def test_an_anonymity_claim_is_what_lets_a_model_leave(engine: PolicyEngine) -> None:
    export = _export(hospital(), "azure:uksouth")
    assert "RESIDENCY_EXPORT_OUTSIDE_EEA" in _codes(engine, export)
    export["export"]["anonymity"] = {"assessmentReference": "ANON-2026-04"}
    decision = engine.decide(_resolved(export))
    assert decision.allow, decision.violations
    claims = [o for o in decision.obligations if o.code == "EXPORT_ANONYMITY_CLAIM_REVIEWED"]
    assert [o.value for o in claims] == ["ANON-2026-04"]
    export["export"]["anonymity"] = {"assessmentReference": "  "}
    assert "EXPORT_ANONYMITY_ASSESSMENT_MISSING" in _codes(engine, export)


def test_per_dataset_rules_never_depend_on_the_action_that_asks() -> None:
    """A ``data_violations`` rule (the per-dataset rule set both provisioning and grants
    evaluate) gated on provisioning alone would make the two paths diverge again."""
    rule = re.compile(r"^data_violations contains v if \{\n(.*?)\n\}", re.MULTILINE | re.DOTALL)
    found = 0
    for path in sorted(POLICY_DIR.rglob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        for body in rule.findall(path.read_text()):
            found += 1
            assert "lib.provisioning" not in body, path
            assert "lib.exporting" not in body, path
            assert 'action == "' not in body, path
    assert found >= 20


def test_every_per_dataset_rule_set_is_part_of_data_access() -> None:
    """A package's ``data_violations`` left out of ``main.data_access`` would never deny."""
    main = (POLICY_DIR / "main/main.rego").read_text()
    for path in sorted(POLICY_DIR.rglob("*.rego")):
        text = path.read_text()
        if path.name.endswith("_test.rego") or "\ndata_violations contains" not in text:
            continue
        package = re.search(r"^package ([\w.]+)", text, re.MULTILINE)
        assert package is not None, path
        assert f"{package.group(1).split('.')[-1]}.data_violations" in main, path
