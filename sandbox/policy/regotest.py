"""Run Rego unit tests (``test_*`` rules) with the embedded engine, no OPA needed.

regopy has no test runner, so the ``test_*`` rules of each test package are compiled,
with the policies, into a bundle whose entry points are the tests, and each entry
point is evaluated: ``true`` passes, undefined or any other value fails, an engine
error is reported as an error. ``todo_test_*`` rules are skipped, as ``opa test`` does.

One bundle is compiled per test package (all ``*_test.rego`` files declaring it),
not one for every test: regopy compiles every rule of every module it is given, and
each ``with`` replacement copies the rules it reaches once per call path, so a
bundle holding all the tests peaks at the sum of them all (16 GiB for the shipped
policies before their tests and helpers were trimmed). A test may therefore use the
rules and functions of its own package and of the policies, not those of another
test package.

Known regopy 1.5 limitations, which ``opa test`` does not have:

* ``with input as <object>`` crashes the process (segmentation fault or abort) when
  the replaced input reaches an arithmetic or comparison builtin; replace fields with
  ``with input.<field> as ...`` instead;
* ``with input.<field> as <rule reference>`` is ignored; bind the rule to a local
  variable first (``cluster := _cluster``), one binding per line.
* a function name defined with different arities in different packages (policy or
  test) aborts the process at compile time; such a set is refused before compiling
  (:func:`~sandbox.policy.policyset.arity_conflicts`).
* every ``with`` clause costs a copy of everything the replaced value reaches, and
  helper-function chains are copied once per call path: keep the clauses of a test
  package few (route cases through one helper) and query the per-action entry
  point (``data.main.sandbox_provision``...) rather than ``data.main.decision``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum

import regopy

from sandbox.policy.embedded import (
    compile_problems,
    new_interpreter,
    query_entrypoint,
    unsupported_calls,
)
from sandbox.policy.policyset import (
    CUSTOM_MODULE_DIR,
    PolicyLoadError,
    PolicySet,
    arity_conflicts,
)

__all__ = ["Outcome", "TestResult", "discover_tests", "run_tests"]

_PACKAGE = re.compile(r"^package\s+([\w.]+)", re.MULTILINE)
_TEST_RULE = re.compile(r"^((?:todo_)?test_\w+)\b", re.MULTILINE)


class Outcome(StrEnum):
    """How one test ended."""

    passed = "PASS"
    failed = "FAIL"
    error = "ERROR"
    skipped = "SKIP"


@dataclass(frozen=True)
class TestResult:
    """The result of one ``test_*`` rule."""

    __test__ = False  # not a pytest test class

    path: str
    package: str
    name: str
    outcome: Outcome
    duration: float
    message: str = ""

    @property
    def query(self) -> str:
        """The query the test was run as."""
        return f"data.{self.package}.{self.name}"


def discover_tests(policy_set: PolicySet) -> Iterator[tuple[str, str, str]]:
    """Yield ``(path, package, rule)`` for every test rule, in file order, once each."""
    for path in sorted(policy_set.tests):
        source = policy_set.tests[path]
        match = _PACKAGE.search(source)
        if not match:
            continue
        seen: set[str] = set()
        for rule in _TEST_RULE.findall(source):
            if rule not in seen:
                seen.add(rule)
                yield path, match.group(1), rule


def run_tests(policy_set: PolicySet, *, pattern: str | None = None) -> list[TestResult]:
    """Run every test rule of ``policy_set`` whose name matches ``pattern``.

    Each test package is compiled on its own with the policy modules. Tests of the
    default SandboxPolicies (``sandboxpolicy/*_test.rego``) are compiled with those
    policies' modules; every other test without them, as the built-in packages are
    evaluated (regopy ignores a ``with data.custom...`` replacement when a ``custom``
    package exists).

    Raises:
        PolicyLoadError: if the modules or tests do not compile, call builtins the
            embedded engine lacks, or define a function name with different arities
            (on which regopy would abort the process).
    """
    selector = re.compile(pattern) if pattern else None
    selected = [
        test
        for test in discover_tests(policy_set)
        if not selector or selector.search(f"{test[1]}.{test[2]}")
    ]
    defaults = {policy.module_path: policy.rego for policy in policy_set.defaults}
    conflicts = arity_conflicts({**policy_set.modules, **defaults, **policy_set.tests})
    if conflicts:
        raise PolicyLoadError("tests would crash the embedded engine", conflicts)
    packages = _packages(policy_set.tests)
    prefix = CUSTOM_MODULE_DIR + "/"
    groups: dict[tuple[bool, str], list[tuple[str, str, str]]] = {}
    for test in selected:
        groups.setdefault((test[0].startswith(prefix), test[1]), []).append(test)
    outcomes: dict[tuple[str, str], TestResult] = {}
    for (with_defaults, package), group in groups.items():
        tests = {
            path: source
            for path, source in policy_set.tests.items()
            if path.startswith(prefix) is with_defaults and packages.get(path) == package
        }
        modules = {**policy_set.modules, **(defaults if with_defaults else {}), **tests}
        for result in _run_group(policy_set, modules, group):
            outcomes[result.path, result.name] = result
    return [outcomes[path, rule] for path, _, rule in selected]


def _packages(sources: Mapping[str, str]) -> dict[str, str]:
    """The package each source declares, by path (sources without one are left out)."""
    found: dict[str, str] = {}
    for path, source in sources.items():
        match = _PACKAGE.search(source)
        if match:
            found[path] = match.group(1)
    return found


def _run_group(
    policy_set: PolicySet, modules: dict[str, str], selected: list[tuple[str, str, str]]
) -> list[TestResult]:
    interpreter = new_interpreter(modules, policy_set.data)
    problems = unsupported_calls(interpreter, modules)
    if problems:
        raise PolicyLoadError("policy uses builtins the embedded engine lacks", problems)
    runnable = [t for t in selected if not t[2].startswith("todo_")]
    bundle = None
    if runnable:
        try:
            bundle = interpreter.build(None, [_entrypoint(p, r) for _, p, r in runnable])
        except regopy.RegoError as exc:
            raise PolicyLoadError(
                "tests do not compile", compile_problems(exc, modules, runnable[0][0])
            ) from exc
    runner = regopy.Interpreter()
    results: list[TestResult] = []
    for path, package, rule in selected:
        if bundle is None or rule.startswith("todo_"):
            results.append(TestResult(path, package, rule, Outcome.skipped, 0.0))
        else:
            results.append(_run_one(runner, bundle, path, package, rule))
    return results


def _entrypoint(package: str, rule: str) -> str:
    return f"{package.replace('.', '/')}/{rule}"


def _run_one(
    runner: regopy.Interpreter, bundle: regopy.Bundle, path: str, package: str, rule: str
) -> TestResult:
    started = time.perf_counter()
    try:
        value = query_entrypoint(runner, bundle, _entrypoint(package, rule))
    except Exception as exc:  # report any engine failure as a test error
        elapsed = time.perf_counter() - started
        return TestResult(path, package, rule, Outcome.error, elapsed, str(exc))
    elapsed = time.perf_counter() - started
    if value is True:
        return TestResult(path, package, rule, Outcome.passed, elapsed)
    shown = "undefined" if value is None else repr(value)
    return TestResult(path, package, rule, Outcome.failed, elapsed, f"evaluated to {shown}")
