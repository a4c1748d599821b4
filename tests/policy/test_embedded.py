"""The embedded engine: decisions, load-time checks, failing closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox.policy import (
    CODE_DECISION_MALFORMED,
    CODE_DECISION_UNDEFINED,
    CODE_ENGINE_ERROR,
    CODE_ENGINE_TIMEOUT,
    CODE_ENGINE_UNAVAILABLE,
    EmbeddedEngine,
    PolicyLoadError,
    PolicySet,
)
from sandbox.policy.engine import EvaluationError

from .inputs import baseline


def _set(main: str, extra: dict[str, str] | None = None) -> PolicySet:
    return PolicySet({"main/main.rego": main, **(extra or {})}, {})


def test_compliant_input_is_allowed(embedded: EmbeddedEngine, policy_set: PolicySet) -> None:
    decision = embedded.decide(baseline())
    assert decision.allow, decision.violations
    assert decision.policy_digest == policy_set.digest
    assert [o.code for o in decision.obligations] == ["AUDIT_RETENTION_MIN_DAYS"]


def test_violations_carry_code_subject_and_regulation(embedded: EmbeddedEngine) -> None:
    document = baseline()
    document["datasets"][0]["location"]["region"] = "aws:us-east-1"
    decision = embedded.decide(document)
    assert not decision.allow
    by_code = {v.code: v for v in decision.violations}
    assert set(by_code) == {"RESIDENCY_DATASET_OUTSIDE_AREA", "RESIDENCY_DATASET_OUTSIDE_EEA"}
    violation = by_code["RESIDENCY_DATASET_OUTSIDE_EEA"]
    assert violation.subject == "dataset/tx"
    assert violation.regulation.startswith("GDPR Art. 44")
    assert "aws:us-east-1" in violation.msg


def test_strings_with_quotes_survive_the_engine(embedded: EmbeddedEngine) -> None:
    document = baseline()
    document["sandbox"]["datasets"].append({"name": 'we"ird\\name\n', "purpose": "fraud"})
    decision = embedded.decide(document)
    assert [v.subject for v in decision.violations] == ['dataset/we"ird\\name\n']


def test_unknown_action_is_denied(embedded: EmbeddedEngine) -> None:
    decision = embedded.decide(baseline("sandbox.delete"))
    assert [v.code for v in decision.violations] == ["POLICY_UNKNOWN_ACTION"]


def test_unsupported_builtin_is_refused_at_load() -> None:
    main = (
        'package main\n\ndecision := {"allow": ok, "violations": [], "obligations": []}\n\n'
        'ok := net.cidr_contains("10.0.0.0/8", input.ip)\n'
    )
    with pytest.raises(PolicyLoadError, match=r"main/main.rego:5: calls net.cidr_contains\(\)"):
        EmbeddedEngine(_set(main))


def test_syntax_error_names_file_and_line() -> None:
    broken = "package main\n\ndecision if {\n\t1 ==\n}\n"
    with pytest.raises(PolicyLoadError, match=r"main/main.rego:4"):
        EmbeddedEngine(_set(broken))


def test_undefined_decision_is_refused_at_load() -> None:
    with pytest.raises(PolicyLoadError, match="undefined"):
        EmbeddedEngine(_set("package main\n\ndecision := 1 if input.x\n"))


def test_bad_set_never_replaces_good(policy_set: PolicySet) -> None:
    engine = EmbeddedEngine(policy_set)
    with pytest.raises(PolicyLoadError):
        engine.load(_set("package main\n\ndecision if {\n"))
    assert engine.policy_digest == policy_set.digest
    assert engine.decide(baseline()).allow


def test_no_policy_is_a_deny_that_says_why() -> None:
    engine = EmbeddedEngine()
    decision = engine.decide(baseline())
    assert not decision.allow
    assert decision.violations[0].code == CODE_ENGINE_UNAVAILABLE
    with pytest.raises(PolicyLoadError):
        engine.load(_set("package main\n\ndecision if {\n"))
    reason = engine.decide(baseline()).violations[0]
    assert reason.code == CODE_ENGINE_UNAVAILABLE
    assert "main/main.rego" in reason.msg


def test_undefined_at_runtime_is_denied() -> None:
    main = (
        'package main\n\ndefault decision := {"allow": true, "violations": [], '
        '"obligations": []}\n\ndecision := 1 if input.undefined_please\n'
    )
    engine = EmbeddedEngine(_set(main))
    assert engine.decide({}).allow
    bad = engine.decide({"undefined_please": True})
    assert bad.violations[0].code == CODE_DECISION_MALFORMED


def test_engine_failures_are_denied(monkeypatch: pytest.MonkeyPatch, policy_set: PolicySet) -> None:
    engine = EmbeddedEngine(policy_set)

    def boom(document: dict[str, Any]) -> Any:
        raise RuntimeError("segfault averted")

    monkeypatch.setattr(engine, "_evaluate", boom)
    decision = engine.decide(baseline())
    assert (decision.allow, decision.violations[0].code) == (False, CODE_ENGINE_ERROR)
    assert "segfault averted" in decision.violations[0].msg

    def undefined(document: dict[str, Any]) -> Any:
        return None

    monkeypatch.setattr(engine, "_evaluate", undefined)
    assert engine.decide(baseline()).violations[0].code == CODE_DECISION_UNDEFINED

    def failure(document: dict[str, Any]) -> Any:
        raise EvaluationError(CODE_ENGINE_ERROR, "bad output")

    monkeypatch.setattr(engine, "_evaluate", failure)
    assert engine.decide(baseline()).violations[0].code == CODE_ENGINE_ERROR


def test_slow_decision_is_denied(policy_set: PolicySet) -> None:
    engine = EmbeddedEngine(policy_set, timeout=0.0)
    decision = engine.decide(baseline())
    assert (decision.allow, decision.violations[0].code) == (False, CODE_ENGINE_TIMEOUT)


def test_reload_with_same_digest_is_a_no_op(policy_set: PolicySet) -> None:
    engine = EmbeddedEngine(policy_set)
    bundle = engine._bundle
    engine.load(PolicySet.from_directory(Path(policy_set.root or ".")))
    assert engine._bundle is bundle
