"""``sandboxctl policy check`` on the examples, and ``sandboxctl policy test``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sandbox.cli.output import EXIT_ERROR, EXIT_OK, EXIT_VERIFY_FAILED
from sandbox.cli.policy import app

from .conftest import EXAMPLES, POLICY_DIR

runner = CliRunner()

FINANCE = ["finance/tenant.yaml", "finance/datasets.yaml"]
HEALTH = ["health/tenant.yaml", "health/datasets.yaml"]
PUBLIC = ["public/tenant.yaml", "public/datasets.yaml"]
RESEARCH = ["research/tenant.yaml", "research/datasets.yaml"]

# (files, extra flags, exit code, exact violation codes)
CASES = [
    (
        [*FINANCE, "finance/sandbox-fraud-model.yaml"],
        [],
        EXIT_OK,
        [],
    ),
    (
        [*FINANCE, "finance/sandbox-violating.yaml"],
        [],
        EXIT_VERIFY_FAILED,
        [
            "DATASET_NOT_REGISTERED",
            "DATASET_PURPOSE_NOT_ALLOWED",
            "DATASET_SANDBOX_PURPOSE_NOT_ALLOWED",
            "FINANCE_DATA_LOCATION_NOT_CONTRACTED",
            "FINANCE_EGRESS_OUTSIDE_EEA",
            "RESIDENCY_DATASET_OUTSIDE_AREA",
            "RESIDENCY_DATASET_OUTSIDE_EEA",
            # GDPR Art. 44: customer data and an egress rule to a US API, both datasets.
            "RESIDENCY_PERSONAL_DATA_EGRESS",
            "RESIDENCY_PERSONAL_DATA_EGRESS",
        ],
    ),
    (
        [
            "finance/tenant-unattested.yaml",
            "finance/datasets.yaml",
            "finance/sandbox-fraud-model.yaml",
        ],
        [],
        EXIT_VERIFY_FAILED,
        ["FINANCE_SUPERVISOR_ATTESTATION_MISSING"],
    ),
    (
        [*FINANCE, "finance/sandbox-fraud-model.yaml"],
        ["--cluster-region", "aws:us-east-1", "--audit-retention-days", "365"],
        EXIT_VERIFY_FAILED,
        [
            "FINANCE_AUDIT_RETENTION_TOO_SHORT",
            "FINANCE_DATA_LOCATION_NOT_CONTRACTED",
            "RESIDENCY_CLUSTER_OUTSIDE_AREA",
            "RESIDENCY_KEY_OUTSIDE_AREA",
            "RESIDENCY_PROCESSING_OUTSIDE_EEA",
            "RESIDENCY_SANDBOX_REGION_MISMATCH",
        ],
    ),
    (
        [*HEALTH, "health/sandbox-sepsis-model.yaml"],
        [],
        EXIT_OK,
        [],
    ),
    (
        [*HEALTH, "health/sandbox-violating.yaml"],
        [],
        EXIT_VERIFY_FAILED,
        ["HEALTH_PERMIT_EXPIRES_BEFORE_SANDBOX", "HEALTH_PERMIT_PURPOSE_NOT_COVERED"],
    ),
    (
        [
            "health/tenant-no-permit.yaml",
            "health/datasets.yaml",
            "health/sandbox-sepsis-model.yaml",
        ],
        [],
        EXIT_VERIFY_FAILED,
        ["HEALTH_DATA_NOT_PSEUDONYMISED", "HEALTH_DATA_PERMIT_MISSING"],
    ),
    (
        [*HEALTH, "health/sandbox-sepsis-model.yaml", "health/export-model.yaml"],
        [],
        EXIT_OK,
        [],
    ),
    (
        [*HEALTH, "health/sandbox-sepsis-model.yaml", "health/export-anonymous.yaml"],
        [],
        EXIT_OK,
        [],
    ),
    (
        [*HEALTH, "health/sandbox-sepsis-model.yaml", "health/export-violating.yaml"],
        [],
        EXIT_VERIFY_FAILED,
        [
            "EXPORT_INSUFFICIENT_REVIEWS",
            "EXPORT_SELF_REVIEW",
            "HEALTH_EXPORT_ARTIFACT_NOT_ALLOWED",
            "RESIDENCY_EXPORT_OUTSIDE_DATA_AREA",
            "RESIDENCY_EXPORT_OUTSIDE_EEA",
        ],
    ),
    (
        [*PUBLIC, "public/sandbox-claim-triage.yaml"],
        [],
        EXIT_OK,
        [],
    ),
    (
        [*PUBLIC, "public/sandbox-violating.yaml"],
        [],
        EXIT_VERIFY_FAILED,
        [
            "PUBLIC_ANONYMISATION_JUSTIFICATION_MISSING",
            "PUBLIC_DATA_NOT_DELETED_AT_END",
            "PUBLIC_DELETION_COMMITMENT_MISSING",
            "PUBLIC_INTEREST_AREA_MISSING",
            "PUBLIC_LIFETIME_UNBOUNDED",
            "PUBLIC_MONITORING_MISSING",
            "RESIDENCY_CLUSTER_OUTSIDE_AREA",
            "RESIDENCY_KEY_OUTSIDE_AREA",
        ],
    ),
    (
        [*RESEARCH, "research/sandbox-mobility-model.yaml"],
        [],
        EXIT_OK,
        [],
    ),
    (
        [*RESEARCH, "research/sandbox-violating.yaml"],
        [],
        EXIT_VERIFY_FAILED,
        [
            "DATASET_PURPOSE_NOT_ALLOWED",
            "DATASET_SANDBOX_PURPOSE_NOT_ALLOWED",
            "RESIDENCY_DATASET_OUTSIDE_AREA",
            "RESIDENCY_DATASET_OUTSIDE_EEA",
        ],
    ),
    (
        ["public/tenant-no-dpia.yaml", "public/datasets.yaml", "public/sandbox-claim-triage.yaml"],
        [],
        EXIT_VERIFY_FAILED,
        ["PUBLIC_DPIA_MISSING"],
    ),
]


def _check(files: list[str], *flags: str) -> tuple[int, dict[str, object], str]:
    args = ["check", "-o", "json", *flags]
    for name in files:
        args += ["-f", str(EXAMPLES / name)]
    result = runner.invoke(app, args)
    return result.exit_code, json.loads(result.stdout) if result.stdout else {}, result.stderr


@pytest.mark.parametrize(
    ("files", "flags", "exit_code", "codes"),
    CASES,
    ids=[f"{c[0][-1]}{'+' + c[1][1] if c[1] else ''}" for c in CASES],
)
def test_examples_give_exact_codes(
    files: list[str], flags: list[str], exit_code: int, codes: list[str]
) -> None:
    code, decision, stderr = _check(files, *flags)
    assert code == exit_code, stderr
    assert sorted(v["code"] for v in decision["violations"]) == codes  # type: ignore[attr-defined]
    assert str(decision["policy_digest"]).startswith("sha256:")


def test_every_example_is_exercised() -> None:
    used = {name for files, *_ in CASES for name in files}
    shipped = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.yaml")}
    assert shipped == used


def test_multi_document_file_is_accepted(tmp_path: Path) -> None:
    bundle = tmp_path / "all.yaml"
    bundle.write_text(
        "\n---\n".join(
            (EXAMPLES / name).read_text() for name in [*FINANCE, "finance/sandbox-fraud-model.yaml"]
        )
    )
    code, decision, _ = _check([str(bundle)])
    assert code == EXIT_OK
    assert decision["allow"] is True


def test_table_output_lists_violations() -> None:
    args = ["check"]
    for name in [*HEALTH, "health/sandbox-violating.yaml"]:
        args += ["-f", str(EXAMPLES / name)]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == EXIT_VERIFY_FAILED
    assert "HEALTH_PERMIT_PURPOSE_NOT_COVERED" in result.stdout
    assert "denied (2 violation(s))" in result.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kind: [unclosed\n", "invalid YAML"),
        ("apiVersion: regsandbox.io/v1alpha1\nkind: Widget\nmetadata: {name: w}\n", "unknown kind"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "exactly one Tenant"),
    ],
)
def test_bad_manifests_exit_1(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = runner.invoke(app, ["check", "-f", str(path), "--cluster-region", "x"])
    assert result.exit_code == EXIT_ERROR
    assert message in result.stderr


def test_unknown_action_flag_exits_1() -> None:
    result = runner.invoke(
        app, ["check", "-f", str(EXAMPLES / FINANCE[0]), "--action", "sandbox.delete"]
    )
    assert result.exit_code == EXIT_ERROR


def test_broken_policy_dir_exits_1_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "main").mkdir()
    (tmp_path / "main" / "main.rego").write_text("package main\n\ndecision if {\n\t1 ==\n}\n")
    args = ["check", "--policy-dir", str(tmp_path)]
    for name in [*FINANCE, "finance/sandbox-fraud-model.yaml"]:
        args += ["-f", str(EXAMPLES / name)]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_ERROR
    assert "main/main.rego:4" in result.stderr


@pytest.mark.opa
def test_check_with_the_opa_engine(opa_url: str) -> None:
    code, decision, stderr = _check(
        [*PUBLIC, "public/sandbox-violating.yaml"], "--engine", "opa", "--opa-url", opa_url
    )
    assert code == EXIT_VERIFY_FAILED, stderr
    assert len(decision["violations"]) == 8  # type: ignore[arg-type]
    assert "by the opa engine" in stderr


POLICY_TEST_PEAK_BUDGET = 3 * 1024**3
"""Most memory ``sandboxctl policy test`` may take for the shipped tests (bytes).

regopy compiles one bundle per test package; each ``with`` copies what it reaches, so
a helper-function chain under many ``with`` clauses once made the run peak at 16 GiB
(1.6 GiB after the fix). A policy change that brings that back fails here."""


def _policy_test(*args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """``sandboxctl policy test`` as a user runs it, in a process of its own.

    Returns the result and the process's peak resident memory in bytes (its own
    rusage, read with ``wait4``, so nothing else pytest started counts).
    """
    command = [sys.executable, "-m", "sandbox.cli", "policy", "test", *args]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        deadline = threading.Timer(600, process.kill)
        deadline.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            deadline.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())
    return result, usage.ru_maxrss * 1024


def test_policy_test_runs_the_shipped_rego_tests() -> None:
    result, peak = _policy_test(str(POLICY_DIR), "-o", "json")
    assert result.returncode == EXIT_OK, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) >= 40
    assert {r["result"] for r in rows} == {"PASS"}
    assert peak <= POLICY_TEST_PEAK_BUDGET, f"policy test peaked at {peak / 1024**3:.1f} GiB"


def test_policy_test_reports_failures_with_exit_3(tmp_path: Path) -> None:
    (tmp_path / "p.rego").write_text("package p\n\nanswer := 42\n")
    (tmp_path / "p_test.rego").write_text(
        "package p_test\n\nimport data.p\n\ntest_right if p.answer == 42\n\n"
        "test_wrong if p.answer == 41\n\ntodo_test_later if false\n"
    )
    result = runner.invoke(app, ["test", str(tmp_path), "-o", "json"])
    assert result.exit_code == EXIT_VERIFY_FAILED
    outcomes = {r["test"]: r["result"] for r in json.loads(result.stdout)}
    assert outcomes == {
        "data.p_test.test_right": "PASS",
        "data.p_test.test_wrong": "FAIL",
        "data.p_test.todo_test_later": "SKIP",
    }
    assert "1/3 passed, 1 failed" in result.stderr


def test_policy_test_filters_by_name() -> None:
    result, _ = _policy_test(str(POLICY_DIR), "-r", "finance", "-o", "json")
    assert result.returncode == EXIT_OK, result.stderr
    assert all("finance" in r["test"] for r in json.loads(result.stdout))


@pytest.mark.parametrize("lifetime", ["{ttl: 3000000d}", "{ttl: 99999999999999999999w}"])
@pytest.mark.parametrize("engine", ["embedded", pytest.param("opa", marks=pytest.mark.opa)])
def test_an_enormous_lifetime_is_a_violation_in_pure_json(
    tmp_path: Path, lifetime: str, engine: str, request: pytest.FixtureRequest
) -> None:
    sandbox = (EXAMPLES / "finance/sandbox-fraud-model.yaml").read_text()
    path = tmp_path / "sandbox.yaml"
    path.write_text(sandbox.replace("lifetime: {ttl: 2160h}", f"lifetime: {lifetime}"))
    flags = []
    if engine == "opa":
        flags = ["--engine", "opa", "--opa-url", request.getfixturevalue("opa_url")]
    args = ["check", "-o", "json", *flags, "-f", str(path)]
    for name in FINANCE:
        args += ["-f", str(EXAMPLES / name)]
    result = runner.invoke(app, args)
    assert result.exit_code == EXIT_VERIFY_FAILED, result.stderr
    decision = json.loads(result.stdout)  # stdout is one JSON document, nothing else
    assert [v["code"] for v in decision["violations"]] == ["SANDBOX_LIFETIME_TOO_LONG"]
    assert "3650 days" in decision["violations"][0]["msg"]


def test_json_output_is_pure_json_or_empty_on_every_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    paths = [
        [*FINANCE, "finance/sandbox-fraud-model.yaml"],
        [*FINANCE, "finance/sandbox-violating.yaml"],
        [*HEALTH, "health/sandbox-sepsis-model.yaml", "health/export-violating.yaml"],
        [str(bad)],
    ]
    for files in paths:
        code, _, stderr = _check(files)  # _check parses stdout as JSON when not empty
        assert code in (EXIT_OK, EXIT_VERIFY_FAILED, EXIT_ERROR), stderr
        if code == EXIT_ERROR:
            assert stderr.startswith("error:") or "error" in stderr.lower()
