"""The chart's admission policies are exactly what sandbox.artifacts.admission makes."""

from __future__ import annotations

from pathlib import Path

from sandbox.artifacts.admission import CHART_FILE, admission_policies, render
from sandbox.kube.admission import CHART_LABELS, load_chart_file


def test_chart_file_is_in_step_with_the_python(repo_root: Path) -> None:
    text = (repo_root / CHART_FILE).read_text()
    assert text == render(), "regenerate: python -m sandbox.artifacts.admission"
    # Exactly these objects, each labelled with the chart's standard labels.
    assert load_chart_file(text) == admission_policies()
    assert text.count(CHART_LABELS) == len(admission_policies())


def test_no_one_is_exempt() -> None:
    for obj in admission_policies():
        spec = obj["spec"]
        assert "matchConditions" not in spec
        if obj["kind"] == "ValidatingAdmissionPolicyBinding":
            assert spec["validationActions"] == ["Deny"]
            assert "matchResources" not in spec
        else:
            assert spec["failurePolicy"] == "Fail"
            rules = spec["matchConstraints"]["resourceRules"]
            assert all("/" not in r for rule in rules for r in rule["resources"])
