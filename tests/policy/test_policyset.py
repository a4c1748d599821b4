"""Policy sets: loading like opa, the digest, the builtin scan."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.policy import PolicyLoadError, PolicySet
from sandbox.policy.policyset import find_calls

from .conftest import POLICY_DIR


def test_shipped_set_has_every_concern(policy_set: PolicySet) -> None:
    packages = {path.split("/")[0] for path in policy_set.modules}
    assert {"residency", "dataset", "sector", "export", "main", "lib"} <= packages
    assert {"finance", "health", "public"} <= {
        path.split("/")[1] for path in policy_set.modules if path.startswith("sector/")
    }
    for path in policy_set.modules:
        if path != "lib/lib.rego":
            assert path.replace(".rego", "_test.rego") in policy_set.tests


def test_data_is_placed_at_its_directory(policy_set: PolicySet) -> None:
    data = policy_set.data["data"]
    assert data["regions"]["onprem:lu-national-1"]["country"] == "LU"
    assert len(data["areas"]["eu"]) == 27
    assert len(data["areas"]["eea"]) == 30
    assert data["retention"]["finance"]["auditLogDays"] == 1826
    assert {"aws", "azure", "gcp", "ovhcloud", "scaleway", "on-premise"} == {
        r["provider"] for r in data["regions"].values()
    }


def test_digest_is_stable_and_ignores_tests(tmp_path: Path, policy_set: PolicySet) -> None:
    again = PolicySet.from_directory(POLICY_DIR)
    assert again.digest == policy_set.digest
    assert policy_set.digest.startswith("sha256:")
    assert len(policy_set.digest) == 71
    changed_test = PolicySet(policy_set.modules, policy_set.data, {"x_test.rego": "package x"})
    assert changed_test.digest == policy_set.digest


def test_digest_changes_with_modules_and_data(policy_set: PolicySet) -> None:
    modules = dict(policy_set.modules)
    modules["main/main.rego"] += "\n"
    assert PolicySet(modules, policy_set.data).digest != policy_set.digest
    data = {"data": {**policy_set.data["data"], "extra": {}}}
    assert PolicySet(policy_set.modules, data).digest != policy_set.digest


def test_bad_data_file_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "data.json").write_text('{\n  "a": 1,\n}\n')
    with pytest.raises(PolicyLoadError, match=r"d/data.json:3"):
        PolicySet.from_directory(tmp_path)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="does not exist"):
        PolicySet.from_directory(tmp_path / "nope")


def test_call_scan_resolves_imports_and_ignores_strings() -> None:
    modules = {
        "a.rego": 'package a\n\nf(x) := x\n\ny := f(1)\n\nz := sprintf("g(%d)", [f(2)])  # h(3)\n',
        "b.rego": (
            "package b\n\nimport data.a\n\nw := a.f(1)\n\nv := data.a.f(2)\n\n"
            'u := net.cidr_contains("a", "b")\n'
        ),
    }
    assert sorted(find_calls(modules)) == [
        ("a.rego", 7, "sprintf"),
        ("b.rego", 9, "net.cidr_contains"),
    ]
