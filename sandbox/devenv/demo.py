"""``make demo``: a non-interactive tour of regsandbox on a fresh local stack.

Each step checks what it shows; any step that misbehaves makes the tour fail (exit 1).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from kubernetes import client
from rich.console import Console
from rich.table import Table

from sandbox.api.conditions import find_condition
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.stack import EXPORT_BUCKET, StackSettings, running_stack
from sandbox.devenv.workload import Workload
from sandbox.kube.apply import apply, get
from sandbox.kube.clients import kube_client
from sandbox.policy.defaults import default_policies

__all__ = ["DemoStep", "TourStack", "run_demo", "run_tour"]

HOME = "tenant-lux-bank"


@dataclass
class DemoStep:
    """One line of the summary."""

    who: str
    what: str
    ok: bool
    detail: str


class DemoStepError(Exception):
    """A step did not behave as the tour expects."""


class TourStack(Protocol):
    """What the tour needs of a running regsandbox (processes or the chart on a node)."""

    plane: ControlPlane
    admin: client.ApiClient
    kind: str

    @property
    def audit_log(self) -> Path:
        """The audit log's directory, readable from this machine."""
        ...

    def check(self) -> None:
        """Raise if a component is down."""
        ...

    def workload(self, namespace: str) -> Workload:
        """The sandbox's workload, talking to the gateway as itself."""
        ...


_TTL = {"processes": "90s", "chart": "180s"}
"""The tour's sandbox lifetime: short, so the tour watches it expire, yet long enough for
the story before it on a busy machine (a real pod must start on the node first)."""

Mode = Literal["auto", "chart", "processes"]


def _wait(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise DemoStepError(f"timed out after {timeout:.0f}s waiting for {what}")


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    """The condition of ``type_`` on ``obj``, or ``{}``."""
    return dict(find_condition(((obj or {}).get("status") or {}).get("conditions"), type_) or {})


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write_model(workload: Workload, artifact: bytes) -> dict[str, Any]:
    """The workload writes its model into the sandbox's outbox through the gateway."""
    written = workload.put("/v1/outbox/fraud-detector.onnx", artifact)
    if written.status != 201:
        raise DemoStepError(f"writing the model gave {written.status}: {written.text}")
    again = workload.put("/v1/outbox/fraud-detector.onnx", b"other bytes")
    if again.status != 409:
        raise DemoStepError(f"replacing the written model gave {again.status}, not 409")
    answer = written.json()
    if answer.get("sha256") != hashlib.sha256(artifact).hexdigest():
        raise DemoStepError(f"the gateway stored other bytes than were sent: {answer}")
    return answer


def _export(
    stack: TourStack,
    api: client.ApiClient,
    workload: Workload,
    step: Callable[[str, str, str], None],
) -> str:
    """Write the model, request an export, refuse self-approval, approve twice, release."""
    users = {u: stack.plane.add_user(u) for u in ("anna.schmit", "claire.muller", "paul.hoffmann")}
    artifact = b"ONNX\x00fraud-detector-v1" + bytes(range(64))
    written = _write_model(workload, artifact)
    step(
        f"workload ({workload.description})",
        "wrote its model into the sandbox's outbox through the gateway; a second write "
        "under the same name was refused",
        f"PUT fraud-detector.onnx → 201 (sha256 {written['sha256'][:16]}…); "
        "again → 409; recorded as model.artifact.written",
    )
    body = {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "ModelExport",
        "metadata": {"name": "fraud-detector-v1", "namespace": HOME},
        "spec": {
            "sandbox": "fraud-model",
            "artifact": {"path": "fraud-detector.onnx", "type": "model"},
            "destination": {
                "bucket": EXPORT_BUCKET,
                "prefix": "fraud/",
                "region": "aws:eu-central-1",
            },
            "justification": "fraud model for the production scoring service",
            "requestedBy": "anna.schmit",
        },
    }
    anna = kube_client(users["anna.schmit"])
    client.CustomObjectsApi(anna).create_namespaced_custom_object(
        "regsandbox.io", "v1alpha1", HOME, "modelexports", body
    )
    self_approval = _cli(
        "export",
        "approve",
        "fraud-detector-v1",
        "-n",
        HOME,
        "--kubeconfig",
        str(users["anna.schmit"]),
        "-m",
        "looks good to me",
    )
    if self_approval.returncode == 0:
        raise DemoStepError("the requester could approve her own export")
    refusal = f"{self_approval.stdout}{self_approval.stderr}"
    if "forbidden" not in refusal.lower():  # refused by the API server, not a CLI failure
        raise DemoStepError(f"self-approval failed for another reason: {refusal.strip()}")
    for reviewer in ("claire.muller", "paul.hoffmann"):
        approved = _cli(
            "export",
            "approve",
            "fraud-detector-v1",
            "-n",
            HOME,
            "--kubeconfig",
            str(users[reviewer]),
            "-m",
            "validated on hold-out data",
        )
        if approved.returncode != 0:
            raise DemoStepError(f"{reviewer} could not approve: {approved.stdout}{approved.stderr}")

    def released() -> dict[str, Any] | None:
        obj = get(api, "ModelExport", "fraud-detector-v1", HOME)
        return obj if _condition(obj, "Released").get("status") == "True" else None

    done = _wait(released, 90, "the export to be released")
    step(
        "bank data scientist + reviewers",
        "requested a model export; self-approval refused by the API server (the requester "
        "holds no reviewer role); two reviewers approved; released",
        f"sha256 {done['status']['sha256'][:16]}… copied to s3://{EXPORT_BUCKET}/fraud/ "
        f"with a signed receipt (audit entry {done['status'].get('releaseIndex', '?')})",
    )
    return "fraud-detector-v1"


def _tour(stack: TourStack, repo: Path, console: Console, steps: list[DemoStep]) -> None:
    api = stack.admin

    def step(who: str, what: str, detail: str) -> None:
        steps.append(DemoStep(who, what, True, detail))
        console.print(f"[green]✔[/green] [bold]{who}[/bold]: {what}\n    [dim]{detail}[/dim]")

    # 1 — the platform engineer's objects (applied by the stack from examples/).
    _wait(
        lambda: _condition(get(api, "Tenant", "lux-bank"), "Ready").get("status") == "True",
        60,
        "the bank tenant",
    )
    _wait(lambda: get(api, "Namespace", "tenant-lux-hospital"), 60, "the hospital tenant")
    policy_names = [policy.name for policy in default_policies(repo / "policies")]
    _wait(
        lambda: all(
            _condition(get(api, "SandboxPolicy", name), "Accepted").get("status") == "True"
            for name in policy_names
        ),
        60,
        "the default SandboxPolicies to be accepted",
    )
    eu = get(api, "Dataset", "lux-bank-transactions")
    us = get(api, "Dataset", "lux-bank-customers-us-copy")
    if not (eu and us):
        raise DemoStepError("the example datasets are missing")
    step(
        "platform engineer",
        "registered tenants (a Luxembourg bank, a hospital) and datasets",
        f"lux-bank-transactions in {eu['spec']['location']['region']}, "
        f"lux-bank-customers-us-copy in {us['spec']['location']['region']}; "
        f"built-in policies and the default SandboxPolicies in force "
        f"({', '.join(policy_names)})",
    )

    # 2 — the bank asks for a compliant sandbox and for one that breaks residency rules.
    [fraud] = _load(repo / "examples/finance/sandbox-fraud-model.yaml")
    # Short, so the tour can watch it expire, yet long enough for the story before it on a
    # busy machine (a sandbox that expires before its workload ran would end the tour).
    fraud["spec"]["lifetime"] = {"ttl": _TTL[stack.kind]}
    apply(api, fraud)
    try:
        ready = _wait(
            lambda: (
                (o := get(api, "Sandbox", "fraud-model", HOME))
                and _condition(o, "Ready").get("status") == "True"
                and o
            ),
            60,
            "the compliant sandbox",
        )
    except DemoStepError as exc:
        last = _condition(get(api, "Sandbox", "fraud-model", HOME), "Ready")
        raise DemoStepError(
            f"{exc}; its Ready condition: {last.get('reason')}: {last.get('message')}"
        ) from None
    namespace = ready["status"]["namespace"]
    step(
        "bank data scientist",
        "requested a compliant sandbox: provisioned",
        f"namespace {namespace}, key {ready['status']['keyId']}, "
        f"StorageClass {ready['status']['storageClass']} (encrypted)",
    )
    [bad] = _load(repo / "examples/finance/sandbox-violating.yaml")
    apply(api, bad)
    refused = _wait(
        lambda: (
            _condition(get(api, "Sandbox", bad["metadata"]["name"], HOME), "PolicyCompliant")
            if _condition(
                get(api, "Sandbox", bad["metadata"]["name"], HOME), "PolicyCompliant"
            ).get("status")
            == "False"
            else None
        ),
        60,
        "the violating sandbox to be refused",
    )
    if get(api, "Namespace", f"sbx-lux-bank-{bad['metadata']['name']}") is not None:
        raise DemoStepError("the violating sandbox got a namespace")
    first = refused["message"].split("; ")
    step(
        "bank data scientist",
        "requested a sandbox that breaks residency rules: refused, nothing created",
        "\n    ".join(first[:3]) + (f"\n    … and {len(first) - 3} more" if len(first) > 3 else ""),
    )

    # 3 — a workload in the sandbox reads a granted dataset through the gateway.
    stack.check()
    workload = stack.workload(namespace)
    listing = workload.get("/v1/datasets/lux-bank-transactions/objects")
    if listing.status != 200:
        raise DemoStepError(f"listing a granted dataset gave {listing.status}: {listing.text}")
    body = workload.get("/v1/datasets/lux-bank-transactions/objects/part-0001.csv")
    if body.status != 200 or not body.head.startswith(b"txn_id"):
        raise DemoStepError(f"reading a granted object gave {body.status}: {body.text}")
    denied = workload.get("/v1/datasets/lux-bank-customers-us-copy/objects")
    if denied.status != 403:
        raise DemoStepError(f"an ungranted dataset gave {denied.status}, not 403")
    step(
        f"workload ({workload.description})",
        "read a granted dataset through the gateway; an ungranted one was refused",
        f"GET part-0001.csv → 200 ({body.size} bytes, sha256 {body.sha256[:16]}…); "
        f"lux-bank-customers-us-copy → 403; every request is in the audit log",
    )

    # 4 — a model leaves through the airlock: self-approval refused, two reviewers approve.
    export_name = _export(stack, api, workload, step)
    stack.check()

    # 5 — the sandbox reaches the end of its lifetime.
    expired = _wait(
        lambda: (
            (o := get(api, "Sandbox", "fraud-model", HOME))
            and _condition(o, "Ready").get("reason") == "Expired"
            and o
        ),
        180,
        "the sandbox to expire",
    )
    if get(api, "Namespace", namespace) is not None:
        raise DemoStepError("the expired sandbox's namespace is still there")
    step(
        "operator",
        "the sandbox expired: namespace deleted, key destroyed (crypto-shredding)",
        f"key {expired['status']['keyId']} destroyed; recorded as key.destroyed",
    )

    # 6 — the compliance officer verifies the log offline and checks a receipt.
    verify = _cli("audit", "verify", "--log", str(stack.audit_log))
    if verify.returncode != 0:
        raise DemoStepError(f"audit verify failed: {verify.stdout}{verify.stderr}")
    log = _cli("audit", "log", "--log", str(stack.audit_log), "-o", "json")
    entries = yaml.safe_load(log.stdout) or []
    destroyed = [e for e in entries if e.get("action") == "key.destroyed"]
    if not destroyed:
        raise DemoStepError("no key.destroyed entry in the log")
    index = str(destroyed[-1]["index"])
    proof = _cli("audit", "prove", "--log", str(stack.audit_log), "--index", index)
    _verify_receipt(stack, "receipt", "entry.json", proof.stdout, index)
    receipt = _cli(
        "export",
        "receipt",
        export_name,
        "-n",
        HOME,
        "--kubeconfig",
        str(stack.plane.admin_kubeconfig),
    )
    released = [e for e in entries if e.get("action") == "model.export.released"]
    if receipt.returncode != 0 or not released:
        raise DemoStepError(f"no release receipt: {receipt.stderr}")
    released_index = str(released[-1]["index"])
    _verify_receipt(stack, "release", "release.json", receipt.stdout, released_index)
    step(
        "compliance officer",
        "verified the whole log and two receipts offline",
        f"{len(entries)} entries re-hashed, checkpoint signature checked; "
        f"receipts of entry {released_index} (model.export.released) and {index} "
        "(key.destroyed) verify against log.vkey",
    )


def _verify_receipt(stack: TourStack, name: str, entry_file: str, proof: str, index: str) -> None:
    """Check ``proof`` (a tlog-proof) for entry ``index`` offline, as an auditor would.

    The proof and the entry's raw bytes are written beside the log as ``<name>.tlog-proof``
    and ``entry_file``, then ``sandboxctl audit verify-proof`` checks them against the
    log's verifier key.
    """
    workdir = stack.audit_log.parent
    raw = _cli("audit", "entry", "--log", str(stack.audit_log), "--index", index, "--raw")
    (workdir / f"{name}.tlog-proof").write_text(proof)
    (workdir / entry_file).write_text(raw.stdout)
    checked = _cli(
        "audit",
        "verify-proof",
        "--proof",
        str(workdir / f"{name}.tlog-proof"),
        "--entry",
        str(workdir / entry_file),
        "--vkey",
        str(stack.audit_log / "log.vkey"),
    )
    if checked.returncode != 0:
        raise DemoStepError(
            f"the {name} proof of entry {index} did not verify: {checked.stdout}{checked.stderr}"
        )


def _stack(
    mode: Mode, settings: StackSettings, console: Console
) -> AbstractContextManager[TourStack]:
    """The stack the tour runs on: the chart on a node when the machine can host one."""
    from sandbox.devenv.dataplane import unavailable_reason

    if mode == "auto":
        reason = unavailable_reason()
        if reason is not None:
            console.print(
                f"[yellow]no local node ({reason}): the components run as processes[/yellow]"
            )
        mode = "processes" if reason is not None else "chart"
    if mode == "chart":
        from sandbox.devenv.chartstack import running_chart_stack

        return running_chart_stack(settings)
    return running_stack(settings)


def run_tour(stack: TourStack, repo: Path, console: Console | None = None) -> list[DemoStep]:
    """Run the tour's steps on ``stack``; raise :class:`DemoStepError` at the first misstep."""
    steps: list[DemoStep] = []
    _tour(stack, repo, console or Console(), steps)
    return steps


def run_demo(
    repo: Path, directory: Path, console: Console | None = None, mode: Mode = "auto"
) -> bool:
    """Run the tour on a fresh stack in ``directory``; True when every step behaved.

    ``mode`` ``chart`` installs the Helm chart on a local node (root), ``processes`` runs the
    components as processes, ``auto`` picks the chart where the machine can host a node.
    """
    console = console or Console()
    steps: list[DemoStep] = []
    ok = True
    settings = StackSettings(
        directory=directory,
        repo=repo,
        resync_seconds=1.0,
        progress=lambda m: console.print(f"[dim]• {m}[/dim]"),
    )
    try:
        with _stack(mode, settings, console) as stack:
            console.print(f"[bold]regsandbox is running ({stack.kind}); the tour starts[/bold]")
            _tour(stack, repo, console, steps)
    except DemoStepError as exc:
        ok = False
        console.print(f"[red]✘ {exc}[/red]")
    table = Table(title="regsandbox tour")
    for column in ("who", "what", "result"):
        table.add_column(column)
    for s in steps:
        table.add_row(s.who, s.what, "[green]ok[/green]" if s.ok else "[red]failed[/red]")
    if not ok:
        table.add_row("—", "tour stopped", "[red]failed[/red]")
    console.print(table)
    return ok
