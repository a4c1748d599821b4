"""``sandboxctl policy``: check manifests against the policies, run policy tests.

``policy check`` works like conftest in a GitOps pipeline: exit 0 when the action
is allowed, 3 when it is denied, 1 when the manifests or policies are unusable.
``policy test`` runs the Rego tests with the embedded engine, so no OPA is needed.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from sandbox.cli.output import (
    EXIT_ERROR,
    EXIT_VERIFY_FAILED,
    OutputFormat,
    err_console,
    fail,
    print_data,
    print_rows,
)
from sandbox.errors import ConfigurationError
from sandbox.policy.embedded import EmbeddedEngine
from sandbox.policy.engine import PolicyEngine
from sandbox.policy.manifests import build_input, load_manifests
from sandbox.policy.model import ACTIONS, ClusterFacts, Decision
from sandbox.policy.opa import DEFAULT_OPA_URL, OpaEngine
from sandbox.policy.policyset import DEFAULT_POLICY_DIR, PolicyLoadError, PolicySet
from sandbox.policy.regotest import Outcome, run_tests

__all__ = ["EngineChoice", "app"]

app = typer.Typer(
    help="Check manifests against the policies; run Rego tests.", no_args_is_help=True
)

DEFAULT_AUDIT_RETENTION_DAYS = 1826
"""Audit retention assumed by ``policy check`` unless told otherwise (five years)."""


class EngineChoice(StrEnum):
    """Which engine ``policy check`` evaluates with."""

    embedded = "embedded"
    opa = "opa"


def _open_engine(choice: EngineChoice, policy_set: PolicySet, opa_url: str) -> PolicyEngine:
    if choice is EngineChoice.embedded:
        return EmbeddedEngine(policy_set)
    return OpaEngine(opa_url, policy_set)


def _load_policy_set(policy_dir: Path) -> PolicySet:
    try:
        return PolicySet.from_directory(policy_dir)
    except PolicyLoadError as exc:
        fail(str(exc))


def _decision_rows(decision: Decision) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {
            "kind": "violation",
            "code": v.code,
            "subject": v.subject,
            "detail": v.msg,
            "regulation": v.regulation,
        }
        for v in decision.violations
    ]
    rows += [
        {
            "kind": "obligation",
            "code": o.code,
            "subject": "",
            "detail": str(o.value),
            "regulation": o.regulation,
        }
        for o in decision.obligations
    ]
    rows += [
        {
            "kind": f"warning ({w.enforcement}, {w.policy})",
            "code": w.code,
            "subject": w.subject,
            "detail": w.msg,
            "regulation": w.regulation,
        }
        for w in decision.warnings
    ]
    return rows


@app.command("check")
def check(
    files: Annotated[
        list[Path],
        typer.Option(
            "-f",
            "--filename",
            help="Tenant, Sandbox, Dataset (and ModelExport) manifests; multi-document "
            "YAML accepted. Repeat for several files.",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    cluster_region: Annotated[
        str | None,
        typer.Option(
            "--cluster-region",
            help="Region-catalogue id of the cluster (default: the Sandbox's spec.region).",
        ),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            "--action",
            help=f"One of {', '.join(ACTIONS)} (default: model.export when a ModelExport "
            "is given, else sandbox.provision).",
        ),
    ] = None,
    engine: Annotated[
        EngineChoice, typer.Option("--engine", help="Evaluate in-process or on an OPA server.")
    ] = EngineChoice.embedded,
    opa_url: Annotated[
        str, typer.Option("--opa-url", help="OPA server for --engine opa.")
    ] = DEFAULT_OPA_URL,
    key_region: Annotated[
        str | None,
        typer.Option("--key-region", help="Region of the sandbox key store (default: cluster)."),
    ] = None,
    audit_retention_days: Annotated[
        int, typer.Option("--audit-retention-days", min=0, help="Audit log retention.")
    ] = DEFAULT_AUDIT_RETENTION_DAYS,
    policy_dir: Annotated[
        Path, typer.Option("--policy-dir", help="Policy directory.", file_okay=False)
    ] = DEFAULT_POLICY_DIR,
    default_policies: Annotated[
        bool,
        typer.Option(
            "--default-policies/--no-default-policies",
            help="Also apply the default SandboxPolicies of the policy directory "
            "(sandboxpolicy/), as the chart installs them.",
        ),
    ] = True,
    output: Annotated[
        OutputFormat, typer.Option("-o", "--output", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """Evaluate the policies for manifests; exit 0 allowed, 3 denied, 1 error.

    The default SandboxPolicies found in the policy directory count as installed
    unless ``--no-default-policies`` is given: deny ones can deny, warn and dryrun
    ones are shown as warnings.
    """
    if action is not None and action not in ACTIONS:
        fail(f"unknown action {action!r}: use one of {', '.join(ACTIONS)}")
    try:
        manifests = load_manifests(files)
        if cluster_region is None:
            claimed = [str((s.get("spec") or {}).get("region") or "") for s in manifests.sandboxes]
            cluster_region = claimed[0] if len(claimed) == 1 and claimed[0] else None
        if cluster_region is None:
            raise ConfigurationError("no --cluster-region given and no Sandbox spec.region")
        policy_set = _load_policy_set(policy_dir)
        if default_policies and policy_set.defaults:
            policy_set = policy_set.with_custom(policy_set.defaults)
        jurisdiction = str(
            policy_set.data.get("data", {})
            .get("regions", {})
            .get(cluster_region, {})
            .get("country", "")
        )
        cluster = ClusterFacts.model_validate(
            {
                "region": cluster_region,
                "jurisdiction": jurisdiction,
                "keys": {"region": key_region or cluster_region, "perSandbox": True},
                "audit": {"retentionDays": audit_retention_days},
            }
        )
        policy_input = build_input(manifests, cluster, action=action)
    except ConfigurationError as exc:
        fail(str(exc))
    try:
        with _open_engine(engine, policy_set, opa_url) as evaluator:
            decision = evaluator.decide(policy_input)
    except PolicyLoadError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(str(exc))
    if output in (OutputFormat.json, OutputFormat.yaml):
        print_data(decision.model_dump(mode="json"), output)
    else:
        rows = _decision_rows(decision)
        if rows:
            print_rows(
                rows,
                ["kind", "code", "subject", "detail"],
                output,
                wide_columns=["regulation"],
                name_key="code",
            )
    verdict = "allowed" if decision.allow else f"denied ({len(decision.violations)} violation(s))"
    err_console.print(
        f"{policy_input.action} {verdict} by the {engine.value} engine, "
        f"policy {decision.policy_digest}",
        highlight=False,
        markup=False,
    )
    if not decision.allow:
        raise typer.Exit(EXIT_VERIFY_FAILED)


@app.command("test")
def run_rego_tests(
    directory: Annotated[
        Path,
        typer.Argument(help="Policy directory with *_test.rego files.", file_okay=False),
    ] = DEFAULT_POLICY_DIR,
    run: Annotated[
        str | None,
        typer.Option("-r", "--run", help="Only tests whose package.rule matches this regex."),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("-o", "--output", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """Run the Rego tests with the embedded engine; exit 0 all pass, 3 a test failed."""
    policy_set = _load_policy_set(directory)
    try:
        results = run_tests(policy_set, pattern=run)
    except PolicyLoadError as exc:
        fail(str(exc))
    rows = [
        {
            "test": r.query,
            "result": r.outcome.value,
            "file": r.path,
            "ms": f"{r.duration * 1000:.2f}",
            "message": r.message,
        }
        for r in results
    ]
    if output in (OutputFormat.json, OutputFormat.yaml):
        print_data(rows, output)
    else:
        columns = ["test", "result", "file", "ms"]
        print_rows(rows, columns, output, wide_columns=["message"], name_key="test")
    counts = {o: sum(1 for r in results if r.outcome is o) for o in Outcome}
    err_console.print(
        f"{counts[Outcome.passed]}/{len(results)} passed, {counts[Outcome.failed]} failed, "
        f"{counts[Outcome.error]} error(s), {counts[Outcome.skipped]} skipped",
        highlight=False,
        markup=False,
    )
    if not results:
        fail(f"no test_* rules found in {directory}", EXIT_ERROR)
    if counts[Outcome.failed] or counts[Outcome.error]:
        raise typer.Exit(EXIT_VERIFY_FAILED)
