"""The default SandboxPolicies of ``policies/sandboxpolicy/``: read, decided, rendered."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from sandbox.cli.output import EXIT_OK, EXIT_VERIFY_FAILED
from sandbox.cli.policy import app
from sandbox.policy import EmbeddedEngine, OpaEngine, PolicyEngine, PolicySet
from sandbox.policy.defaults import (
    CHART_POLICY_DIR,
    default_policies,
    manifest,
    render,
    stale_files,
    write_manifests,
)
from sandbox.policy.policyset import PolicyLoadError, read_default_policy

from .conftest import EXAMPLES, POLICY_DIR
from .inputs import baseline

runner = CliRunner()

EXPECTED = {
    "egress-https-only": "warn",
    "egress-narrow-cidr": "deny",
    "lifetime-review": "warn",
}


def test_defaults_are_read_from_their_metadata_and_kept_out_of_the_builtin_set(
    policy_set: PolicySet,
) -> None:
    assert {p.name: p.enforcement for p in policy_set.defaults} == EXPECTED
    assert not any(path.startswith("sandboxpolicy/") for path in policy_set.modules)
    narrow = next(p for p in policy_set.defaults if p.name == "egress-narrow-cidr")
    assert narrow.data == {"minPrefixIPv4": 24, "minPrefixIPv6": 64}
    assert narrow.package() == "egress_narrow_cidr"
    assert any(path.startswith("sandboxpolicy/") for path in policy_set.tests)


MODULE = """# METADATA
# title: t
# custom:
#   sandboxPolicy:
#     name: {name}
#     enforcement: {enforcement}
#     sectors: {sectors}
package {package}

violations := set()
"""


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "other"}, "custom.sandboxPolicy.name must be 'probe'"),
        ({"enforcement": "block"}, "enforcement 'block' is not deny, warn or dryrun"),
        ({"package": "probe"}, "is not directly under custom."),
        ({"sectors": "finance"}, "sectors must be a list"),
    ],
)
def test_bad_default_metadata_is_refused_with_file_and_line(
    fields: dict[str, str], message: str
) -> None:
    values = {
        "name": "probe",
        "enforcement": "warn",
        "sectors": "[]",
        "package": "custom.probe",
    } | fields
    with pytest.raises(PolicyLoadError) as caught:
        read_default_policy("sandboxpolicy/probe.rego", MODULE.format(**values))
    assert message in str(caught.value)
    assert caught.value.problems[0].path == "sandboxpolicy/probe.rego"


def test_a_default_without_metadata_is_refused() -> None:
    with pytest.raises(PolicyLoadError, match="no metadata"):
        read_default_policy("sandboxpolicy/probe.rego", "package custom.probe\n")


def test_a_bad_default_fails_the_whole_directory(tmp_path: Path) -> None:
    (tmp_path / "sandboxpolicy").mkdir()
    (tmp_path / "sandboxpolicy/probe.rego").write_text("package custom.probe\n")
    with pytest.raises(PolicyLoadError, match="no metadata"):
        PolicySet.from_directory(tmp_path)


def _wide_egress(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    document["sandbox"]["egress"] = [
        {"cidr": "0.0.0.0/0", "ports": [443, 8080], "region": document["cluster"]["region"]}
    ]
    return document


@pytest.fixture(scope="module")
def opa_engine(own_opa_url: str, policy_set: PolicySet) -> Iterator[OpaEngine]:
    engine = OpaEngine(own_opa_url, policy_set.with_custom(policy_set.defaults), timeout=5.0)
    yield engine
    engine.close()


@pytest.fixture(params=["embedded", "opa"])
def engine(
    request: pytest.FixtureRequest, opa_engine: OpaEngine, policy_set: PolicySet
) -> PolicyEngine:
    if request.param == "opa":
        return opa_engine
    return EmbeddedEngine(policy_set.with_custom(policy_set.defaults))


def test_defaults_in_force_deny_wide_egress_and_warn_about_ports(engine: PolicyEngine) -> None:
    assert engine.decide(baseline()).allow
    decision = engine.decide(_wide_egress(baseline()))
    assert not decision.allow
    assert [v.code for v in decision.violations] == ["CUSTOM_EGRESS_CIDR_TOO_WIDE"]
    assert [(w.code, w.policy, w.enforcement) for w in decision.warnings] == [
        ("CUSTOM_EGRESS_NOT_HTTPS", "egress-https-only", "warn")
    ]


def test_default_policy_data_is_honoured(engine: PolicyEngine, policy_set: PolicySet) -> None:
    document = baseline()
    document["sandbox"]["lifetime"]["seconds"] = 40 * 86400
    assert not engine.decide(document).warnings
    policies = [
        p if p.name != "lifetime-review" else type(p)(p.name, p.rego, {"maxDays": 30}, "warn")
        for p in policy_set.defaults
    ]
    engine.load(policy_set.with_custom(policies))
    try:
        assert [w.code for w in engine.decide(document).warnings] == ["CUSTOM_LIFETIME_LONG"]
    finally:
        engine.load(policy_set.with_custom(policy_set.defaults))


def _check(extra: list[str], sandbox: dict[str, Any], tmp_path: Path) -> Any:
    path = tmp_path / "sandbox.yaml"
    path.write_text(yaml.safe_dump(sandbox))
    files = ["-f", str(EXAMPLES / "finance/tenant.yaml"), "-f", str(path)]
    return runner.invoke(app, ["check", *files, "-o", "json", *extra])


def test_policy_check_applies_the_defaults_unless_told_not_to(tmp_path: Path) -> None:
    sandbox = yaml.safe_load((EXAMPLES / "finance/sandbox-fraud-model.yaml").read_text())
    sandbox["spec"]["datasets"] = []
    sandbox["spec"]["egress"][0]["cidr"] = "198.51.0.0/16"
    with_defaults = _check([], sandbox, tmp_path)
    assert with_defaults.exit_code == EXIT_VERIFY_FAILED, with_defaults.output
    decision = json.loads(with_defaults.stdout)
    assert [v["code"] for v in decision["violations"]] == ["CUSTOM_EGRESS_CIDR_TOO_WIDE"]
    without = _check(["--no-default-policies"], sandbox, tmp_path)
    assert without.exit_code == EXIT_OK, without.output


def test_chart_files_are_generated_from_the_policies() -> None:
    stale = stale_files(default_policies(POLICY_DIR), CHART_POLICY_DIR)
    assert not stale, f"{stale} stale: run `python -m sandbox.policy.defaults`"


def test_rendered_manifests_read_back_exactly(tmp_path: Path) -> None:
    policies = default_policies(POLICY_DIR)
    written = write_manifests(policies, tmp_path)
    (tmp_path / "removed.yaml").write_text("kind: SandboxPolicy\n")
    assert [p.name for p in written] == [f"{name}.yaml" for name in sorted(EXPECTED)]
    for policy, path in zip(policies, written, strict=True):
        assert yaml.safe_load(path.read_text()) == manifest(policy)
        assert render(policy).startswith("# Generated by")
    assert stale_files(policies, tmp_path) == [tmp_path / "removed.yaml"]
    write_manifests(policies, tmp_path)
    assert not (tmp_path / "removed.yaml").exists()
