"""The chart's alerting rules, checked and unit-tested by Prometheus's own promtool.

- The rendered rules are valid PromQL and rule syntax (``promtool check rules``, lint
  errors fatal).
- ``alerts.promtest.yaml`` (``promtool test rules``): each alert fires under the
  condition it is meant to catch, with the labels and summary an on-call engineer
  reads, and stays quiet in normal operation and the disturbances the design expects
  (an audit pod's restart, an operator failover, a one-off retry).
- Every alert the chart ships has both kinds of case there, and the cases have teeth:
  an alert that never fires, or always fires, fails them.

promtool is the pinned one (``sandboxctl dev tools --build --name promtool``, part of
``make tools``); the test fails, not skips, without it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sandbox.devenv.toolchain import tool_path
from tests.integration.test_chart_gitops import _render

from .test_chart_monitoring import NAMESPACE, ON

CASES = Path(__file__).with_name("alerts.promtest.yaml")


@pytest.fixture(scope="module")
def promtool() -> Path:
    """The pinned promtool binary."""
    return tool_path("promtool")


@pytest.fixture(scope="module")
def groups(repo_root: Path) -> list[dict[str, Any]]:
    """The rule groups of the chart's PrometheusRule, rendered with monitoring on."""
    text = _render(repo_root / "charts/regsandbox", NAMESPACE, *ON)
    (rule,) = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "PrometheusRule"]
    found: list[dict[str, Any]] = rule["spec"]["groups"]
    return found


def _alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for g in groups for r in g["rules"]]


def _test_rules(promtool: Path, workdir: Path, groups: list[dict[str, Any]]) -> str:
    """Run the cases against ``groups`` (descriptions left out); promtool's report."""
    for alert in _alerts(groups):
        alert.get("annotations", {}).pop("description", None)
    (workdir / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(CASES, workdir / CASES.name)
    result = subprocess.run(
        [str(promtool), "test", "rules", CASES.name],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return f"exit {result.returncode}\n{result.stdout}{result.stderr}"


def test_the_rendered_rules_pass_promtool_check(
    promtool: Path, groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = subprocess.run(
        [str(promtool), "check", "rules", "--lint=all", "--lint-fatal", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_alerts(groups))} rules found" in result.stdout


def test_each_alert_fires_under_its_condition_and_not_otherwise(
    promtool: Path, groups: list[dict[str, Any]], tmp_path: Path
) -> None:
    report = _test_rules(promtool, tmp_path, groups)
    assert report.startswith("exit 0\n"), report
    assert "SUCCESS" in report


def test_every_alert_has_a_firing_and_a_quiet_case(groups: list[dict[str, Any]]) -> None:
    cases = yaml.safe_load(CASES.read_text())["tests"]
    checks = [c for case in cases for c in case["alert_rule_test"]]
    firing = {c["alertname"] for c in checks if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in checks if not c.get("exp_alerts")}
    shipped = {a["alert"] for a in _alerts(groups)}
    assert len(shipped) == 9
    assert firing == shipped
    assert quiet == shipped


@pytest.mark.parametrize("expr", ["vector(1)", "vector(0) > 1"], ids=["always", "never"])
def test_the_cases_fail_an_alert_that_always_or_never_fires(
    promtool: Path, groups: list[dict[str, Any]], tmp_path: Path, expr: str
) -> None:
    for alert in _alerts(groups):
        alert["expr"] = expr
    report = _test_rules(promtool, tmp_path, groups)
    assert not report.startswith("exit 0\n"), report
    for alert in _alerts(groups):
        assert f"alertname: {alert['alert']}" in report, (alert["alert"], report)
