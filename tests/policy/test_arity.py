"""One arity per function name: regopy aborts the process on anything else.

regopy 1.5 aborts (``std::out_of_range``, no exception Python could catch) while
compiling a bundle in which two packages define a function of the same name with
different numbers of arguments, whether or not either is called. The operator would
crash on such a policy set, custom SandboxPolicies included; the engine and
``sandboxctl policy test`` refuse it with the definitions named instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.policy import CustomPolicy, EmbeddedEngine, PolicyLoadError, PolicySet, run_tests
from sandbox.policy.policyset import arity_conflicts

from .inputs import baseline

CLASH = """package custom.clash

# lib.describe takes one argument; this one takes two.
describe(kind, name) := concat(" ", [kind, name])

violations := set()
"""


def test_shipped_policies_and_tests_give_each_function_name_one_arity(
    policy_set: PolicySet,
) -> None:
    defaults = {policy.module_path: policy.rego for policy in policy_set.defaults}
    assert arity_conflicts({**policy_set.modules, **defaults, **policy_set.tests}) == []


def test_conflicts_name_every_definition_and_ignore_patterns_and_strings() -> None:
    modules = {
        "a.rego": 'package a\n\nf(x) := 1\n\ng([a, b], {"k": c}) := 1\n\nh(s) := "f(1, 2)"\n',
        "b.rego": "package b\n\nf(x, y) := 2\n\ng(z, w) := 2\n\nh(t) := 3\n",
    }
    problems = arity_conflicts(modules)
    assert [(p.path, p.line) for p in problems] == [("a.rego", 3), ("b.rego", 3)]
    assert "takes 1 argument(s) here and 2 elsewhere" in problems[0].message


def test_engine_refuses_a_sandbox_policy_that_would_crash_it(policy_set: PolicySet) -> None:
    engine = EmbeddedEngine(policy_set)
    clash = CustomPolicy(name="clash", rego=CLASH)
    with pytest.raises(PolicyLoadError, match=r"SandboxPolicy clash") as caught:
        engine.load(policy_set.with_custom([clash]))
    assert [p.line for p in caught.value.problems if p.path == "sandboxpolicy/clash.rego"] == [4]
    assert engine.policy_digest == policy_set.digest
    assert engine.decide(baseline()).allow


def test_policy_test_refuses_test_packages_whose_helpers_clash(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\n\nanswer := 42\n")
    (tmp_path / "p_test.rego").write_text(
        "package p_test\n\nimport data.p\n\n_is(x) := x == p.answer\n\ntest_a if _is(42)\n"
    )
    (tmp_path / "q_test.rego").write_text(
        "package q_test\n\n_is(x, y) := x == y\n\ntest_b if _is(1, 1)\n"
    )
    with pytest.raises(PolicyLoadError, match="crash the embedded engine") as caught:
        run_tests(PolicySet.from_directory(tmp_path))
    assert {(p.path, p.line) for p in caught.value.problems} == {
        ("p_test.rego", 5),
        ("q_test.rego", 3),
    }
