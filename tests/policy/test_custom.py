"""Custom policies (SandboxPolicy): deny, warn, dryrun, scope, refusal, digest, parity."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.policy import (
    CustomPolicy,
    EmbeddedEngine,
    OpaEngine,
    PolicyEngine,
    PolicyLoadError,
    PolicySet,
    PolicyWarning,
)

from .inputs import baseline, random_input

pytestmark = pytest.mark.opa

NO_GPU = """package custom.no_gpu

# Sandboxes may not ask for more GPUs than data.custom_data["no-gpu"].maxGpu.
violations contains v if {
	gpu := object.get(input.sandbox, ["resources", "gpu"], 0)
	gpu > data.custom_data["no-gpu"].maxGpu
	v := {
		"code": "CUSTOM_TOO_MANY_GPUS",
		"msg": concat("", ["sandbox asks for ", format_int(gpu, 10), " GPUs"]),
		"regulation": "internal cost policy",
		"subject": concat("", ["sandbox/", input.sandbox.name]),
	}
}
"""

LONG_NAMES = """package custom.short_names

violations contains {
	"code": "CUSTOM_NAME_TOO_LONG",
	"msg": "sandbox names are at most 3 characters",
	"regulation": "naming convention",
	"subject": concat("", ["sandbox/", input.sandbox.name]),
} if count(input.sandbox.name) > 3
"""


def no_gpu(enforcement: str = "deny", sectors: tuple[str, ...] = ()) -> CustomPolicy:
    return CustomPolicy(
        name="no-gpu",
        rego=NO_GPU,
        data={"maxGpu": 0},
        enforcement=enforcement,  # type: ignore[arg-type]
        sectors=sectors,
    )


def gpu_input(gpu: int = 2, action: str = "sandbox.provision") -> dict[str, Any]:
    document = baseline(action)
    document["sandbox"]["resources"] = {"gpu": gpu}
    return document


@pytest.fixture(scope="module")
def opa_engine(own_opa_url: str, policy_set: PolicySet) -> Iterator[OpaEngine]:
    engine = OpaEngine(own_opa_url, policy_set, timeout=5.0)
    yield engine
    engine.close()


@pytest.fixture(params=["embedded", "opa"])
def engine(
    request: pytest.FixtureRequest, opa_engine: OpaEngine, policy_set: PolicySet
) -> Iterator[PolicyEngine]:
    """Each engine, with the shipped policies loaded again after the test."""
    chosen: PolicyEngine = EmbeddedEngine(policy_set) if request.param == "embedded" else opa_engine
    yield chosen
    chosen.load(policy_set)


def test_deny_policy_denies(engine: PolicyEngine, policy_set: PolicySet) -> None:
    engine.load(policy_set.with_custom([no_gpu("deny")]))
    decision = engine.decide(gpu_input())
    assert not decision.allow
    assert [(v.code, v.subject, v.msg) for v in decision.violations] == [
        ("CUSTOM_TOO_MANY_GPUS", "sandbox/s1", "sandbox asks for 2 GPUs")
    ]
    assert decision.warnings == []
    assert engine.decide(gpu_input(0)).allow


def test_custom_policies_apply_to_every_action(engine: PolicyEngine, policy_set: PolicySet) -> None:
    engine.load(policy_set.with_custom([no_gpu("deny")]))
    for action in ("dataset.grant", "model.export", "sandbox.delete"):
        codes = {v.code for v in engine.decide(gpu_input(action=action)).violations}
        assert "CUSTOM_TOO_MANY_GPUS" in codes, action


def test_warn_policy_warns_and_allows(engine: PolicyEngine, policy_set: PolicySet) -> None:
    engine.load(policy_set.with_custom([no_gpu("warn")]))
    decision = engine.decide(gpu_input())
    assert decision.allow, decision.violations
    assert decision.warnings == [
        PolicyWarning(
            code="CUSTOM_TOO_MANY_GPUS",
            msg="sandbox asks for 2 GPUs",
            regulation="internal cost policy",
            subject="sandbox/s1",
            policy="no-gpu",
            enforcement="warn",
        )
    ]


def test_dryrun_policy_is_marked(engine: PolicyEngine, policy_set: PolicySet) -> None:
    engine.load(policy_set.with_custom([no_gpu("dryrun")]))
    decision = engine.decide(gpu_input())
    assert decision.allow
    assert [(w.policy, w.enforcement) for w in decision.warnings] == [("no-gpu", "dryrun")]


def test_scope_by_sector(engine: PolicyEngine, policy_set: PolicySet) -> None:
    engine.load(policy_set.with_custom([no_gpu("deny", ("health", "public"))]))
    assert engine.decide(gpu_input()).allow  # baseline is a finance tenant
    engine.load(policy_set.with_custom([no_gpu("deny", ("finance",))]))
    assert not engine.decide(gpu_input()).allow


def test_warnings_are_sorted(engine: PolicyEngine, policy_set: PolicySet) -> None:
    short = CustomPolicy(name="short-names", rego=LONG_NAMES, enforcement="dryrun")
    engine.load(policy_set.with_custom([no_gpu("warn"), short]))
    document = gpu_input()
    document["sandbox"]["name"] = "long-name"
    warnings = engine.decide(document).warnings
    assert [(w.policy, w.code) for w in warnings] == [
        ("no-gpu", "CUSTOM_TOO_MANY_GPUS"),
        ("short-names", "CUSTOM_NAME_TOO_LONG"),
    ]


def test_syntax_error_is_refused_and_old_set_stays(
    engine: PolicyEngine, policy_set: PolicySet
) -> None:
    good = policy_set.with_custom([no_gpu("deny")])
    engine.load(good)
    broken = CustomPolicy(
        name="broken", rego="package custom.broken\n\nviolations contains v if {\n"
    )
    with pytest.raises(PolicyLoadError, match=r"SandboxPolicy broken") as caught:
        engine.load(policy_set.with_custom([no_gpu("deny"), broken]))
    assert any(p.path == "sandboxpolicy/broken.rego" and p.line >= 3 for p in caught.value.problems)
    assert engine.policy_digest == good.digest
    assert not engine.decide(gpu_input()).allow
    assert engine.decide(gpu_input(0)).allow


def test_compile_error_names_policy_and_line(engine: PolicyEngine, policy_set: PolicySet) -> None:
    engine.load(policy_set)
    bad = CustomPolicy(
        name="unsafe",
        rego="package custom.unsafe\n\nviolations contains v if {\n\tv := no_such_function(1)\n}\n",
    )
    with pytest.raises(PolicyLoadError, match=r"SandboxPolicy unsafe") as caught:
        engine.load(policy_set.with_custom([bad]))
    assert [p.line for p in caught.value.problems if p.path == "sandboxpolicy/unsafe.rego"] == [4]
    assert engine.policy_digest == policy_set.digest
    assert engine.decide(baseline()).allow


def test_wrong_package_is_refused_before_any_engine(policy_set: PolicySet) -> None:
    rego = "# not under custom\n\npackage main\n\nviolations := set()\n"
    with pytest.raises(PolicyLoadError, match=r"SandboxPolicy evil: wrong package") as caught:
        policy_set.with_custom([CustomPolicy(name="evil", rego=rego)])
    assert str(caught.value.problems[0]).startswith("sandboxpolicy/evil.rego:3: package main")
    with pytest.raises(PolicyLoadError, match="directly under custom"):
        policy_set.with_custom([CustomPolicy(name="deep", rego="package custom.a.b\n")])
    with pytest.raises(PolicyLoadError, match="no package"):
        policy_set.with_custom([CustomPolicy(name="none", rego="x := 1\n")])
    with pytest.raises(PolicyLoadError, match="already declared by SandboxPolicy no-gpu"):
        policy_set.with_custom([no_gpu(), CustomPolicy(name="other", rego=NO_GPU)])
    with pytest.raises(PolicyLoadError, match="invalid enforcement"):
        policy_set.with_custom([no_gpu("audit")])
    with pytest.raises(PolicyLoadError, match="invalid name"):
        policy_set.with_custom([CustomPolicy(name="No_GPU", rego=NO_GPU)])


def test_digest_covers_custom_modules_data_enforcement_and_scope(policy_set: PolicySet) -> None:
    deny = policy_set.with_custom([no_gpu("deny")])
    digests = {
        policy_set.digest,
        deny.digest,
        policy_set.with_custom([no_gpu("warn")]).digest,
        policy_set.with_custom([no_gpu("dryrun")]).digest,
        policy_set.with_custom([no_gpu("deny", ("finance",))]).digest,
        policy_set.with_custom([CustomPolicy("no-gpu", NO_GPU, {"maxGpu": 1})]).digest,
        policy_set.with_custom([CustomPolicy("no-gpu", NO_GPU + "\n", {"maxGpu": 0})]).digest,
    }
    assert len(digests) == 7
    assert policy_set.with_custom([no_gpu("deny")]).digest == deny.digest
    assert deny.with_custom([]).digest == policy_set.digest
    assert deny.data["custom_data"] == {"no-gpu": {"maxGpu": 0}}
    assert deny.data["custom_policies"] == {
        "no-gpu": {"package": "no_gpu", "enforcement": "deny", "sectors": []}
    }


def test_removing_custom_policies_removes_their_data(
    engine: PolicyEngine, policy_set: PolicySet
) -> None:
    engine.load(policy_set.with_custom([no_gpu("deny")]))
    engine.load(policy_set)
    decision = engine.decide(gpu_input())
    assert decision.allow
    assert decision.warnings == []


def test_parity_with_custom_policies(opa_engine: OpaEngine, policy_set: PolicySet) -> None:
    short = CustomPolicy(name="short-names", rego=LONG_NAMES, enforcement="warn")
    dry = CustomPolicy(
        name="dry-gpu",
        rego=NO_GPU.replace("custom.no_gpu", "custom.dry_gpu"),
        data={},
        enforcement="dryrun",
        sectors=("health", "research"),
    )
    # dry-gpu reads data.custom_data["no-gpu"]: custom policies may share data.
    custom = policy_set.with_custom([no_gpu("deny", ("finance", "public")), short, dry])
    embedded = EmbeddedEngine(custom)
    opa_engine.load(custom)
    try:
        rng = random.Random(20250402)  # noqa: S311 - seeded, reproducible test inputs
        kinds = {"deny": 0, "warn": 0, "dryrun": 0}
        for _ in range(200):
            document = random_input(rng)
            document["sandbox"]["resources"] = {"gpu": rng.choice([0, 1, 4])}
            document["sandbox"]["name"] = rng.choice(["sbx", "long-name"])
            ours, theirs = embedded.decide(document), opa_engine.decide(document)
            assert ours == theirs, document
            assert not any(v.code.startswith("POLICY_ENGINE") for v in ours.violations), ours
            kinds["deny"] += any(v.code == "CUSTOM_TOO_MANY_GPUS" for v in ours.violations)
            for warning in ours.warnings:
                kinds[warning.enforcement] += 1
        assert all(kinds.values()), kinds
    finally:
        opa_engine.load(policy_set)


UNBOUND = """package custom.unbound

# `limit` is never bound: OPA refuses this module; regopy loads it and it never matches.
violations contains {
	"code": "CUSTOM_UNBOUND",
	"msg": "too many GPUs",
	"regulation": "internal",
	"subject": "sandbox",
} if {
	input.sandbox.resources.gpu > limit
}
"""


def test_unbound_variable_is_refused_when_the_engine_checks_with_opa(
    opa_binary: Path, policy_set: PolicySet
) -> None:
    unbound = CustomPolicy(name="unbound", rego=UNBOUND)
    candidate = policy_set.with_custom([unbound])
    # Without the check, regopy accepts the module and the deny rule silently never fires.
    plain = EmbeddedEngine(candidate)
    assert plain.decide(gpu_input(8)).allow
    checked = EmbeddedEngine(policy_set, opa_check=opa_binary)
    with pytest.raises(PolicyLoadError, match=r"SandboxPolicy unbound") as caught:
        checked.load(candidate)
    (problem,) = [p for p in caught.value.problems if p.path == "sandboxpolicy/unbound.rego"]
    assert problem.line == 10
    assert "unsafe" in problem.message
    assert checked.policy_digest == policy_set.digest  # the good set stays
    checked.load(policy_set.with_custom([no_gpu("deny")]))  # a sound module passes the check
    assert not checked.decide(gpu_input()).allow


def test_a_missing_opa_binary_refuses_the_set(tmp_path: Path, policy_set: PolicySet) -> None:
    engine = EmbeddedEngine(opa_check=tmp_path / "no-opa")
    with pytest.raises(PolicyLoadError, match="cannot check the policies"):
        engine.load(policy_set)
    assert engine.decide(baseline()).violations[0].code == "POLICY_ENGINE_UNAVAILABLE"
