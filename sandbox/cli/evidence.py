"""``sandboxctl evidence``: signed, offline-verifiable evidence packs for supervisors.

``pack`` collects a tenant's (or one sandbox's) audit entries with receipts against one
checkpoint, optionally the isolation objects from the cluster, assesses every control
of the catalogue and writes a signed pack. ``verify`` re-checks a pack offline.
Exit codes: 0 ok, 1 error, 2 usage, 3 a check failed.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from audit.errors import AuditError
from audit.log import VKEY_FILE
from audit.note import Verifier
from audit.signing import (
    generate_key_file,
    load_signer,
    load_verifier,
    read_key_text,
    write_vkey_file,
)
from audit.witness import CosignatureVerifier
from sandbox.cli.output import (
    EXIT_ERROR,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
    OutputFormat,
    err_console,
    fail,
    print_rows,
)
from sandbox.evidence.collect import Collected, Scope, collect, read_cluster, time_text

__all__ = ["app"]

app = typer.Typer(
    help="Evidence packs: controls mapped to signed proof, for supervisors.",
    no_args_is_help=True,
)


def _time(value: str | None, flag: str) -> str | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{flag} {value!r}: want an ISO 8601 time such as 2026-03-01T00:00:00Z", EXIT_USAGE)
    if parsed.tzinfo is None:
        fail(f"{flag} {value!r}: give a time zone (e.g. a trailing Z for UTC)", EXIT_USAGE)
    return time_text(parsed)


def _scope(tenant: str | None, sandbox: str | None, since: str | None, until: str | None) -> Scope:
    if sandbox is not None and "/" in sandbox:
        owner, _, sandbox = sandbox.partition("/")
        if tenant is not None and tenant != owner:
            fail(f"--sandbox {owner}/{sandbox} is not a sandbox of --tenant {tenant}", EXIT_USAGE)
        tenant = owner
    if not tenant or sandbox == "":
        fail("give --tenant T, or --sandbox T/NAME (or both --tenant and --sandbox)", EXIT_USAGE)
    return Scope(tenant, sandbox, _time(since, "--since"), _time(until, "--until"))


@app.command("keygen")
def keygen(
    key: Annotated[
        Path, typer.Option("--key", help="New signer key file (mode 0600).", show_default=False)
    ],
    name: Annotated[str, typer.Option("--name", help="Key name, e.g. evidence.example/officer.")],
) -> None:
    """Make a key for signing packs; writes KEY and KEY.vkey, prints the verifier key."""
    try:
        signer = generate_key_file(key, name)
        write_vkey_file(key.with_name(key.name + ".vkey"), signer.verifier)
    except AuditError as exc:
        fail(str(exc))
    typer.echo(signer.verifier.vkey)


def _cluster_reader(kubeconfig: Path) -> Callable[[list[str]], dict[str, dict[str, Any]]]:
    """What reads the sandbox namespaces' isolation objects from the cluster."""
    from kubernetes.client.rest import ApiException

    from sandbox.errors import SandboxError
    from sandbox.kube.clients import kube_client

    try:
        api = kube_client(kubeconfig)
    except SandboxError as exc:
        fail(str(exc))

    def read(namespaces: list[str]) -> dict[str, dict[str, Any]]:
        try:
            return read_cluster(api, namespaces, dt.datetime.now(dt.UTC))
        except ApiException as exc:
            fail(f"cannot read the isolation objects: {exc.status} {exc.reason}")

    return read


def _collect(
    scope: Scope,
    log: Path | None,
    server: str | None,
    token_file: Path | None,
    reader: Callable[[list[str]], dict[str, dict[str, Any]]] | None,
) -> Collected:
    """The scope's evidence from the log directory or the audit service."""
    if log is not None:
        try:
            return collect(log, scope, cluster=reader)
        except (AuditError, OSError) as exc:
            fail(f"cannot read log {log}: {exc}")
    from sandbox.evidence.remote import collect_from_server

    assert server is not None  # one of the two, checked by the caller
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            fail(f"--token-file: {exc}", EXIT_USAGE)
    try:
        return collect_from_server(server, scope, token=token, cluster=reader)
    except (AuditError, ValueError, KeyError, TypeError) as exc:
        fail(f"cannot read the audit service at {server}: {exc}")


@app.command("pack")
def pack(
    out: Annotated[
        Path, typer.Option("-o", "--out", help="New directory for the pack.", show_default=False)
    ],
    key: Annotated[
        Path,
        typer.Option("--key", help="Signer key file for the pack's manifest.", show_default=False),
    ],
    tenant: Annotated[str | None, typer.Option("--tenant", help="Tenant to cover.")] = None,
    sandbox: Annotated[
        str | None, typer.Option("--sandbox", help="One sandbox: NAME (with --tenant) or T/NAME.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Data-plane entries from this time (ISO 8601).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Data-plane entries before this time.")
    ] = None,
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", help="Also record the sandboxes' isolation objects."),
    ] = None,
    pdf: Annotated[
        bool, typer.Option("--pdf", help="Also print the report to report.pdf (needs chromium).")
    ] = False,
    log: Annotated[
        Path | None, typer.Option("--log", help="Audit log directory (or --server).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option("--server", help="Audit service URL: read the tenant's entries from it."),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="Bearer token allowed to read the tenant (--server)."),
    ] = None,
) -> None:
    """Write a signed evidence pack for a tenant or sandbox, from a copy of the audit log
    (--log) or from a running audit service's read API (--server)."""
    from sandbox.evidence.pack import write_pack  # OSCAL models: loaded only when used
    from sandbox.evidence.pdf import BROWSERS, PdfError, find_browser

    scope = _scope(tenant, sandbox, since, until)
    if (log is None) == (server is None):
        fail("give exactly one of --log DIR and --server URL", EXIT_USAGE)
    if token_file is not None and server is None:
        fail("--token-file goes with --server", EXIT_USAGE)
    if pdf and find_browser() is None:
        fail(f"--pdf needs a headless browser ({', '.join(BROWSERS)}); install chromium")
    try:
        signer = load_signer(key)
    except AuditError as exc:
        fail(f"--key: {exc}")
    reader = None if kubeconfig is None else _cluster_reader(kubeconfig)
    found = _collect(scope, log, server, token_file, reader)
    if not found.entries:
        what = (
            f"sandbox {scope.tenant}/{scope.sandbox}" if scope.sandbox else f"tenant {scope.tenant}"
        )
        fail(f"the log has no entry of {what} in that range; nothing was written")
    vkey_path = None if log is None else log / VKEY_FILE
    log_vkey = vkey_path.read_bytes() if vkey_path is not None and vkey_path.is_file() else None
    try:
        info, findings = write_pack(found, out, signer, log_vkey=log_vkey, pdf=pdf)
    except (FileExistsError, OSError, PdfError) as exc:
        fail(f"cannot write the pack: {exc}")
    typer.echo(f"evidencepack/{out} written")
    err_console.print(
        f"{len(found.entries)} entries of tenant {scope.tenant} with receipts against "
        f"{info.origin} size {info.size}; pack id {info.pack_id}",
        highlight=False,
    )
    for finding in findings:
        err_console.print(f"  {finding.control}: {finding.status}", highlight=False)


def _verifiers(values: list[str], what: str) -> list[Verifier]:
    keys: list[Verifier] = []
    try:
        for value in values:
            path = Path(value)
            keys.append(load_verifier(path) if path.is_file() else Verifier.from_vkey(value))
    except AuditError as exc:
        fail(f"{what}: {exc}", EXIT_USAGE)
    return keys


@app.command("verify")
def verify(
    pack_dir: Annotated[Path, typer.Argument(metavar="PACK", help="The pack directory.")],
    vkey: Annotated[
        list[str],
        typer.Option(
            "--vkey",
            help="Trusted verifier key (file or text): the pack signer's and the log's; repeat.",
        ),
    ],
    witness_vkey: Annotated[
        list[str] | None,
        typer.Option("--witness-vkey", help="Witness whose cosignature must be on the checkpoint."),
    ] = None,
    witness_quorum: Annotated[
        int | None, typer.Option("--witness-quorum", help="Cosignatures required (default: all).")
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("-o", "--output", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """Check a pack offline: signature, digests, receipts, and every finding recomputed."""
    from sandbox.evidence.verify import verify_pack  # OSCAL models: loaded only when used

    verifiers = _verifiers(vkey, "--vkey")
    witnesses: list[CosignatureVerifier] = []
    try:
        for value in witness_vkey or []:
            path = Path(value)
            text = read_key_text(path, "witness verifier key").strip() if path.is_file() else value
            witnesses.append(CosignatureVerifier.from_vkey(text))
    except AuditError as exc:
        fail(f"--witness-vkey: {exc}", EXIT_USAGE)
    quorum = len(witnesses) if witness_quorum is None else witness_quorum
    if witnesses and not 1 <= quorum <= len(witnesses):
        fail(f"--witness-quorum {quorum}: want 1 to {len(witnesses)}", EXIT_USAGE)
    if not pack_dir.is_dir():
        fail(f"{pack_dir} is not a pack directory", EXIT_ERROR)
    try:
        report = verify_pack(pack_dir, verifiers, witnesses=witnesses, quorum=quorum)
    except OSError as exc:
        fail(f"cannot read the pack: {exc}")
    if output is OutputFormat.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        rows = [
            {"control": f.control, "status": f.status, "reason": f.reason} for f in report.findings
        ]
        if rows:
            print_rows(rows, ["control", "status", "reason"], output, name_key="control")
        for problem in report.problems:
            err_console.print(f"FAILED {problem.item}: {problem.message}", highlight=False)
        if report.ok:
            err_console.print(
                f"pack verified: {report.files} files, {report.receipts} receipts, "
                f"{len(report.findings)} findings recomputed",
                highlight=False,
            )
    if not report.ok:
        raise typer.Exit(EXIT_VERIFY_FAILED)


@app.command("receipt")
def receipt(
    pack_dir: Annotated[Path, typer.Argument(metavar="PACK", help="The pack directory.")],
    index: Annotated[int, typer.Option("--index", help="The entry's index in the log.")],
    entry_out: Annotated[
        Path | None,
        typer.Option("--entry-out", help="Also write the entry's exact bytes to this file."),
    ] = None,
) -> None:
    """Print one entry's C2SP tlog-proof, derived from the pack's batch receipt.

    Check it with any C2SP tool, e.g. ``sandboxctl audit verify-proof --proof P --entry E
    --vkey log.vkey``. Nothing is trusted here: the proof verifies or it does not.
    """
    from audit.checkpoint import Checkpoint
    from audit.errors import MalformedError, VerificationError
    from audit.note import Note
    from sandbox.evidence.pack import ENTRIES, RECEIPTS
    from sandbox.evidence.receipts import BatchReceipt, standalone

    try:
        batch = BatchReceipt.parse((pack_dir / RECEIPTS).read_bytes())
        size = Checkpoint.from_text(Note.parse(batch.checkpoint).text).size
        if index not in batch.indices:
            fail(f"the pack holds no entry {index}", EXIT_USAGE)
        proof = standalone(batch, size)[index]
        line = b""
        if entry_out is not None:
            for candidate in (pack_dir / ENTRIES).read_bytes().split(b"\n")[:-1]:
                if json.loads(candidate).get("index") == index:
                    line = candidate
                    break
            else:
                fail(f"{ENTRIES} holds no entry {index}", EXIT_USAGE)
    except (OSError, ValueError, MalformedError, VerificationError) as exc:
        fail(f"cannot read the pack's receipt: {exc}")
    if entry_out is not None:
        entry_out.write_bytes(line)
    sys.stdout.write(proof.decode())
