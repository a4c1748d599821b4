"""``sandboxctl audit``: create, append to, inspect and verify an audit log.

Read-only commands open the log without taking the writer lock and see it as of its
latest checkpoint; ``log``, ``show``, ``verify``, ``prove`` and ``consistency`` can
instead read through the audit service with ``--server`` (:mod:`sandbox.cli.audit_remote`),
checking everything against ``--vkey``. Exit codes: 0 ok, 1 error, 2 usage, 3 a check
failed.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import ValidationError

from audit.checkpoint import open_checkpoint
from audit.client import AuditUnavailable
from audit.entry import Entry, Event
from audit.errors import AuditError, MalformedError, VerificationError
from audit.log import KEY_FILE, VKEY_FILE, AuditLog, LogReader
from audit.merkle import verify_consistency
from audit.note import Signer, Verifier, b64encode
from audit.proof import verify_tlog_proof
from audit.remote import RemoteLog
from audit.signing import generate_key_file, load_signer, load_verifier, read_key_text
from audit.snapshot import snapshot
from audit.verify import verify_log
from audit.witness import CosignatureVerifier
from audit.witnessing import COSIGNED_FILE, verify_cosigned
from sandbox.api.meta import parse_rfc3339
from sandbox.cli import audit_archive, audit_remote, audit_serve, audit_siem
from sandbox.cli.audit_remote import (
    CaFileOpt,
    ContextOpt,
    KubeconfigOpt,
    ServerOpt,
    TokenFileOpt,
)
from sandbox.cli.output import (
    EXIT_ERROR,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
    OutputFormat,
    err_console,
    fail,
    print_data,
    print_rows,
)
from sandbox.cli.progress import Progress, QuietOpt

__all__ = ["ExportFormat", "app"]

app = typer.Typer(help="The audit log: append, inspect, prove and verify.", no_args_is_help=True)
audit_serve.register(app)
audit_siem.register(app)
app.add_typer(audit_archive.app, name="archive")

LogDir = Annotated[Path, typer.Option("--log", help="Log directory.", show_default=False)]
KeyFile = Annotated[
    Path | None, typer.Option("--key", help="Signer key file (default: DIR/log.key).")
]
VKeyOpt = Annotated[
    str | None,
    typer.Option("--vkey", help="Trusted verifier key: a file, or the name+id+key text."),
]
Output = Annotated[OutputFormat, typer.Option("-o", "--output", help="Output format.")]
MaybeLogDir = Annotated[
    Path | None,
    typer.Option("--log", help="Log directory (or read through --server).", show_default=False),
]

_COLUMNS = ["index", "time", "action", "actor", "tenant", "sandbox", "resource", "outcome"]
_WIDE = ["allow", "event_id", "request_id"]


class ExportFormat(StrEnum):
    """Formats of ``audit export``."""

    jsonl = "jsonl"
    csv = "csv"


def _error(exc: AuditError) -> NoReturn:
    code = EXIT_VERIFY_FAILED if isinstance(exc, VerificationError) else EXIT_ERROR
    fail(str(exc), code)


def _signer(log: Path, key: Path | None) -> Signer:
    try:
        return load_signer(key or log / KEY_FILE)
    except AuditError as exc:
        _error(exc)


def _verifiers(vkey: str | None, log: Path | None = None) -> list[Verifier]:
    try:
        if vkey is None:
            if log is None:
                fail("--vkey is required", EXIT_ERROR)
            err_console.print(
                f"warning: trusting the log's own {VKEY_FILE}; pass --vkey to check against "
                "a key you obtained independently",
                highlight=False,
            )
            return [load_verifier(log / VKEY_FILE)]
        if Path(vkey).is_file():
            return [load_verifier(Path(vkey))]
        return [Verifier.from_vkey(vkey)]
    except AuditError as exc:
        _error(exc)


@dataclass(frozen=True)
class _Source:
    """Where a read-only command reads: ``--log DIR``, or ``--server URL`` and its options."""

    log: Path | None
    server: str | None
    vkey: str | None
    token_file: Path | None
    kubeconfig: Path | None
    context: str | None
    ca_file: Path | None

    def remote(self, tenant: str | None = None) -> RemoteLog | None:
        """The audit service to read through (in ``tenant``'s scope), or None for ``--log``.

        Exactly one of ``--log`` and ``--server`` must be given, and ``--server`` needs
        ``--vkey`` (usage errors otherwise).
        """
        if (self.log is None) == (self.server is None):
            fail("give --log DIR or --server URL (one of them)", EXIT_USAGE)
        if self.server is None:
            return None
        if self.vkey is None:
            fail("--server needs --vkey: the log's published verifier key", EXIT_USAGE)
        return audit_remote.open_remote(
            self.server,
            _verifiers(self.vkey),
            tenant=tenant,
            token_file=self.token_file,
            kubeconfig=self.kubeconfig,
            context=self.context,
            ca_file=self.ca_file,
        )


@contextmanager
def _remote_reads(
    failed: str,
    refused: tuple[type[AuditError], ...] = (VerificationError, MalformedError),
) -> Iterator[None]:
    """Reads through the service: what does not verify exits 3 (``failed: why``); an
    unreachable or refusing service is reported as such."""
    try:
        yield
    except refused as exc:
        fail(f"{failed}: {exc}", EXIT_VERIFY_FAILED)
    except AuditUnavailable as exc:
        audit_remote.unavailable(exc)


def _reader(log: Path) -> LogReader:
    try:
        return LogReader(log)
    except (AuditError, OSError) as exc:
        fail(f"cannot open log {log}: {exc}")


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")


@app.command("init")
def init(
    log: LogDir,
    origin: Annotated[str, typer.Option(help="Log origin and key name: audit.example/prod.")],
    key: KeyFile = None,
) -> None:
    """Create a log (and a signing key in DIR/log.key if none is given)."""
    try:
        if key is not None:
            signer = load_signer(key)
        else:
            log.mkdir(parents=True, exist_ok=True)
            if (log / "log.json").exists():
                fail(f"{log} already holds an audit log")
            signer = generate_key_file(log / KEY_FILE, origin)
        AuditLog.create(log, origin, signer).close()
    except AuditError as exc:
        _error(exc)
    typer.echo(f"log/{origin} created")
    err_console.print(f"verifier key: {signer.verifier.vkey}", highlight=False)


@app.command("append")
def append(log: LogDir, key: KeyFile = None) -> None:
    """Append JSON events read one per line from stdin, as one batch; print their indices."""
    events: list[Event] = []
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            events.append(Event.model_validate_json(line))
        except ValidationError as exc:
            fail(f"stdin line {number}: not a valid event; nothing was appended:\n{exc}")
    if not events:
        fail("no events on stdin; nothing was appended")
    try:
        with AuditLog(log, _signer(log, key)) as writer:
            indices = writer.append_batch(events)
    except AuditError as exc:
        _error(exc)
    for index in indices:
        typer.echo(index)


@app.command("verify")
def verify(
    log: MaybeLogDir = None,
    vkey: VKeyOpt = None,
    trusted: Annotated[
        list[Path] | None,
        typer.Option("--trusted", help="A checkpoint saved earlier; the log must extend it."),
    ] = None,
    deep: Annotated[bool, typer.Option(help="Also parse every entry against the schema.")] = False,
    witness_vkey: Annotated[
        list[str] | None,
        typer.Option(
            "--witness-vkey",
            help="Verifier key (or file) of a witness whose cosignature counts; repeat.",
        ),
    ] = None,
    witness_quorum: Annotated[
        int | None,
        typer.Option(
            "--witness-quorum",
            help="Cosignatures from those witnesses required (default: all of them).",
        ),
    ] = None,
    cosigned: Annotated[
        Path | None,
        typer.Option(
            "--cosigned",
            help="The cosigned checkpoint (GET /v1/checkpoint/cosigned); default: "
            "DIR/checkpoint.cosigned.",
        ),
    ] = None,
    output: Output = OutputFormat.table,
    server: ServerOpt = None,
    tenant: Annotated[
        str | None, typer.Option(help="With --server: verify only this tenant's entries.")
    ] = None,
    save_checkpoint: Annotated[
        Path | None,
        typer.Option(
            "--save-checkpoint",
            help="With --server: write the verified checkpoint here (use it as --trusted "
            "next time).",
        ),
    ] = None,
    token_file: TokenFileOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    ca_file: CaFileOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Re-hash every entry, rebuild the tree and check the checkpoint signature.

    With --witness-vkey, the latest cosigned checkpoint must also carry valid
    cosignatures from --witness-quorum of those witnesses, and the log must extend it.
    With --server: the checkpoint must verify with --vkey and extend every --trusted
    checkpoint; the whole log is re-hashed, or (--tenant) each of the tenant's entries
    is checked with its inclusion proof.
    """
    source = _Source(log, server, vkey, token_file, kubeconfig, context, ca_file)
    remote = source.remote(tenant)
    progress = Progress(quiet=quiet)
    if remote is not None:
        _verify_remote(remote, trusted or [], save_checkpoint, output, progress)
        return
    assert log is not None
    if tenant is not None or save_checkpoint is not None:
        fail("--tenant and --save-checkpoint need --server", EXIT_USAGE)
    verifiers = _verifiers(vkey, log)
    saved = [_read_file(p) for p in trusted or []]
    witnessed: tuple[str, ...] = ()
    if witness_vkey:
        witnessed, note = _check_cosigned(
            log, verifiers, witness_vkey, witness_quorum, cosigned or log / COSIGNED_FILE
        )
        saved.append(note)
    elif witness_quorum is not None or cosigned is not None:
        fail("--witness-quorum and --cosigned need --witness-vkey", EXIT_USAGE)
    try:
        with progress.task("verifying entries") as advance:
            report = verify_log(log, verifiers, trusted=saved, deep=deep, progress=advance)
    except VerificationError as exc:
        where = f"entry {exc.index}: " if exc.index is not None else ""
        fail(f"verification failed: {where}{exc}", EXIT_VERIFY_FAILED)
    except AuditError as exc:
        _error(exc)
    row = {
        "origin": report.origin,
        "entries": report.entries,
        "checkpoint_size": report.checkpoint.size,
        "root": b64encode(report.checkpoint.root),
        "unpublished": report.unpublished,
        "extends": ",".join(map(str, report.extends)),
        "witnesses": ",".join(witnessed),
        "unsigned_tail_bytes": report.tail.bytes if report.tail else 0,
        "unsigned_tail_records": report.tail.records if report.tail else 0,
    }
    if report.tail is not None:
        typer.echo(f"note: {report.tail}", err=True)
    if output is OutputFormat.table:
        typer.echo(
            f"ok: {report.entries} entries verified; checkpoint {report.checkpoint.size} "
            f"signed by {', '.join(report.verified_by)}"
            + (f"; cosigned by {', '.join(witnessed)}" if witnessed else "")
        )
    else:
        print_rows([row], list(row), output, name_key="origin")


def _verify_remote(
    remote: RemoteLog,
    trusted: list[Path],
    save: Path | None,
    output: OutputFormat,
    progress: Progress,
) -> None:
    saved = [_read_file(p) for p in trusted]
    with remote, _remote_reads("verification failed"):
        note, checkpoint = remote.checkpoint()
        extends = [remote.check_extends(old, checkpoint).size for old in saved]
        count = 0
        with progress.task("verifying entries", total=checkpoint.size) as advance:
            for _ in remote.entries():
                count += 1
                if count % 1024 == 0:
                    advance(count, None)
    if save is not None:
        try:
            save.write_bytes(note)
        except OSError as exc:
            fail(f"cannot write {save}: {exc.strerror}")
    scope = "the whole log" if remote.tenant is None else f"tenant {remote.tenant}"
    row = {
        "origin": checkpoint.origin,
        "scope": scope,
        "entries": count,
        "checkpoint_size": checkpoint.size,
        "root": b64encode(checkpoint.root),
        "extends": ",".join(map(str, extends)),
    }
    if output is OutputFormat.table:
        typer.echo(
            f"ok: {count} entries of {scope} verified against checkpoint {checkpoint.size}"
            + (f"; extends {row['extends']}" if extends else "")
        )
    else:
        print_rows([row], list(row), output, name_key="origin")


def _check_cosigned(
    log: Path,
    verifiers: list[Verifier],
    vkeys: list[str],
    quorum: int | None,
    path: Path,
) -> tuple[tuple[str, ...], bytes]:
    try:
        keys = [
            CosignatureVerifier.from_vkey(
                read_key_text(Path(v), "witness verifier key").strip()
                if "+" not in v and Path(v).is_file()
                else v
            )
            for v in vkeys
        ]
    except AuditError as exc:
        fail(f"--witness-vkey: {exc}", EXIT_USAGE)
    needed = len(keys) if quorum is None else quorum
    if not 1 <= needed <= len(keys):
        fail(f"--witness-quorum {needed}: want 1 to {len(keys)} (the keys given)", EXIT_USAGE)
    note = _read_file(path)
    try:
        _, names = verify_cosigned(note, verifiers, keys, needed)
    except AuditError as exc:
        fail(f"verification failed: cosigned checkpoint {path}: {exc}", EXIT_VERIFY_FAILED)
    return names, note


@app.command("snapshot")
def snapshot_command(
    to: Annotated[
        Path, typer.Option("--to", help="New directory for the copy.", show_default=False)
    ],
    log: MaybeLogDir = None,
    server: ServerOpt = None,
    vkey: VKeyOpt = None,
    token_file: TokenFileOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    ca_file: CaFileOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Copy the log as of its latest checkpoint, safely while it is being written.

    The copy holds the entries, hashes and offsets the checkpoint covers, the checkpoint,
    the configuration and the verifier key (never the signing key); verify it offline.
    With --server (the whole log, so the platform auditor role) the entries come through
    the service and must hash to the checkpoint --vkey verifies before it is written.
    """
    remote = _Source(log, server, vkey, token_file, kubeconfig, context, ca_file).remote()
    progress = Progress(quiet=quiet)
    if remote is not None:
        with remote, _remote_reads("verification failed", (VerificationError,)):
            try:
                with progress.task("copying entries") as advance:
                    checkpoint = remote.snapshot(to, progress=advance)
            except (VerificationError, AuditUnavailable):
                raise
            except (AuditError, OSError) as exc:
                fail(f"cannot write the copy to {to}: {exc}")
        typer.echo(
            f"ok: {checkpoint.size} entries as of checkpoint {b64encode(checkpoint.root)} "
            f"copied to {to}; verify with: sandboxctl audit verify --log {to} --vkey <key>"
        )
        return
    assert log is not None
    try:
        with progress.task("copying the log"):
            checkpoint = snapshot(log, to)
    except AuditError as exc:
        _error(exc)
    typer.echo(
        f"ok: {checkpoint.size} entries as of checkpoint {b64encode(checkpoint.root)} "
        f"copied to {to}; verify with: sandboxctl audit verify --log {to} --vkey <key>"
    )


def _time_option(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _local_entries(log: Path) -> Iterator[tuple[int, bytes]]:
    with _reader(log) as reader:
        yield from reader.iter_entries()


@dataclass(frozen=True)
class _Filter:
    tenant: str | None
    sandbox: str | None
    action: str | None
    actor: str | None
    since: datetime | None
    until: datetime | None

    def __call__(self, entry: Entry) -> bool:
        who, res = entry.actor, entry.resource
        return (
            (self.tenant is None or res.tenant == self.tenant)
            and (self.sandbox is None or res.sandbox == self.sandbox)
            and (
                self.action is None
                or entry.action == self.action
                or entry.action.startswith(self.action + ".")
            )
            and (self.actor is None or self.actor in (who.user, who.service_account, who.pod))
            and (self.since is None or entry.time >= self.since)
            and (self.until is None or entry.time < self.until)
        )


def _entries(
    source: Iterator[tuple[int, bytes]],
    tenant: str | None,
    sandbox: str | None,
    action: str | None,
    actor: str | None,
    since: str | None,
    until: str | None,
) -> Iterator[Entry]:
    wanted = _Filter(tenant, sandbox, action, actor, _time_option(since), _time_option(until))
    try:
        for _, data in source:
            entry = Entry.from_bytes(data)
            if wanted(entry):
                yield entry
    except AuditUnavailable as exc:
        audit_remote.unavailable(exc)
    except VerificationError as exc:
        fail(f"verification failed: {exc}", EXIT_VERIFY_FAILED)
    except AuditError as exc:
        _error(exc)


def _row(entry: Entry) -> dict[str, Any]:
    who = entry.actor
    res = entry.resource
    return {
        "index": entry.index,
        "time": entry.model_dump(mode="json")["time"],
        "action": entry.action,
        "actor": who.user or who.service_account or who.pod or "",
        "tenant": res.tenant,
        "sandbox": res.sandbox,
        "resource": f"{res.kind}/{res.namespace + '/' if res.namespace else ''}{res.name}",
        "outcome": entry.outcome,
        "allow": None if entry.decision is None else entry.decision.allow,
        "event_id": entry.event_id,
        "request_id": entry.request_id,
    }


TenantOpt = Annotated[str | None, typer.Option(help="Only this tenant.")]
SandboxOpt = Annotated[str | None, typer.Option(help="Only this sandbox.")]
ActionOpt = Annotated[str | None, typer.Option(help="Only this action (or prefix: dataset).")]
ActorOpt = Annotated[str | None, typer.Option(help="Only this user, service account or pod.")]
SinceOpt = Annotated[str | None, typer.Option(help="From this time (ISO 8601, inclusive).")]
UntilOpt = Annotated[str | None, typer.Option(help="Until this time (ISO 8601, exclusive).")]


@app.command("log")
def log_command(
    log: MaybeLogDir = None,
    tenant: TenantOpt = None,
    sandbox: SandboxOpt = None,
    action: ActionOpt = None,
    actor: ActorOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    output: Output = OutputFormat.table,
    server: ServerOpt = None,
    vkey: VKeyOpt = None,
    token_file: TokenFileOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """List entries, filtered; ``-o table|wide|json|yaml|csv``.

    With --server, entries come through the audit service, each checked against a
    checkpoint signed by --vkey; --tenant then reads that tenant's slice only (what a
    tenant auditor may read).
    """
    remote = _Source(log, server, vkey, token_file, kubeconfig, context, ca_file).remote(tenant)
    if remote is not None:
        with remote:
            _print_entries(
                _entries(remote.entries(), tenant, sandbox, action, actor, since, until), output
            )
        return
    assert log is not None
    _print_entries(
        _entries(_local_entries(log), tenant, sandbox, action, actor, since, until), output
    )


def _print_entries(entries: Iterator[Entry], output: OutputFormat) -> None:
    if output in (OutputFormat.json, OutputFormat.yaml):
        print_data([e.model_dump(mode="json") for e in entries], output)
        return
    print_rows(
        [_row(e) for e in entries], _COLUMNS, output, wide_columns=_WIDE, name_key="event_id"
    )


@app.command("show")
def show(
    log: MaybeLogDir = None,
    tenant: TenantOpt = None,
    sandbox: SandboxOpt = None,
    action: ActionOpt = None,
    actor: ActorOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    output: Output = OutputFormat.yaml,
    server: ServerOpt = None,
    vkey: VKeyOpt = None,
    token_file: TokenFileOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Show whole entries, filtered like ``log`` (default ``-o yaml``)."""
    log_command(
        log,
        tenant,
        sandbox,
        action,
        actor,
        since,
        until,
        output,
        server,
        vkey,
        token_file,
        kubeconfig,
        context,
        ca_file,
    )


@app.command("checkpoint")
def checkpoint(log: LogDir) -> None:
    """Print the latest signed checkpoint."""
    with _reader(log) as reader:
        sys.stdout.write(reader.checkpoint_note.decode())


@app.command("vkey")
def vkey_command(log: LogDir, key: KeyFile = None) -> None:
    """Print the log's verifier key (from --key if given)."""
    if key is not None:
        typer.echo(_signer(log, key).verifier.vkey)
        return
    try:
        typer.echo(load_verifier(log / VKEY_FILE).vkey)
    except AuditError as exc:
        _error(exc)


@app.command("entry")
def entry_command(
    log: LogDir,
    index: Annotated[int, typer.Option(help="Entry index.")],
    raw: Annotated[bool, typer.Option(help="Exactly the hashed bytes.")] = False,
    output: Output = OutputFormat.json,
) -> None:
    """Print one entry."""
    with _reader(log) as reader:
        try:
            data = reader.entry_bytes(index)
        except IndexError as exc:
            fail(str(exc))
        except AuditError as exc:
            _error(exc)
    if raw:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    print_data(json.loads(data), output)


@app.command("prove")
def prove(
    index: Annotated[int, typer.Option(help="Entry index.")],
    log: MaybeLogDir = None,
    server: ServerOpt = None,
    tenant: Annotated[
        str | None, typer.Option(help="With --server: the entry's tenant (your scope).")
    ] = None,
    vkey: VKeyOpt = None,
    token_file: TokenFileOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Print a C2SP tlog-proof receipt for an entry, against the latest checkpoint.

    With --server the receipt is fetched and checked with --vkey before it is printed.
    """
    remote = _Source(log, server, vkey, token_file, kubeconfig, context, ca_file).remote(tenant)
    if remote is not None:
        with remote, _remote_reads("receipt does not verify"):
            body, _ = remote.receipt(index)
        sys.stdout.write(body.decode())
        return
    assert log is not None
    with _reader(log) as reader:
        try:
            receipt = reader.receipt(index)
        except IndexError as exc:
            fail(str(exc))
    sys.stdout.write(receipt.to_bytes().decode())


@app.command("verify-proof")
def verify_proof(
    proof: Annotated[Path, typer.Option("--proof", help="tlog-proof file.")],
    entry: Annotated[Path, typer.Option("--entry", help="The entry's exact bytes (entry --raw).")],
    vkey: Annotated[str, typer.Option("--vkey", help="Trusted verifier key (file or text).")],
) -> None:
    """Check a receipt offline: the entry is in the log the key signs for."""
    verifiers = _verifiers(vkey)
    try:
        checkpoint = verify_tlog_proof(_read_file(proof), _read_file(entry), verifiers)
    except (VerificationError, MalformedError) as exc:
        fail(f"proof does not verify: {exc}", EXIT_VERIFY_FAILED)
    typer.echo(f"ok: entry is in {checkpoint.origin} at size {checkpoint.size}")


@app.command("consistency")
def consistency(
    old: Annotated[Path, typer.Option("--old", help="A checkpoint saved earlier.")],
    log: MaybeLogDir = None,
    vkey: VKeyOpt = None,
    server: ServerOpt = None,
    tenant: Annotated[
        str | None, typer.Option(help="With --server: read in this tenant's scope.")
    ] = None,
    token_file: TokenFileOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    ca_file: CaFileOpt = None,
) -> None:
    """Prove that the current checkpoint extends an older one; print the proof."""
    remote = _Source(log, server, vkey, token_file, kubeconfig, context, ca_file).remote(tenant)
    if remote is not None:
        with remote, _remote_reads("not consistent"):
            _, current = remote.checkpoint()
            before = remote.check_extends(_read_file(old), current)
            hashes = remote.consistency(before, current)
        for h in hashes:
            typer.echo(b64encode(h))
        err_console.print(f"ok: size {current.size} extends size {before.size}", highlight=False)
        return
    assert log is not None
    verifiers = _verifiers(vkey, log)
    with _reader(log) as reader:
        try:
            before = open_checkpoint(_read_file(old), verifiers, origin=reader.origin)
            now = open_checkpoint(reader.checkpoint_note, verifiers, origin=reader.origin)
            if before.size > now.size:
                raise VerificationError(
                    f"the log shrank: the old checkpoint has {before.size} entries, "
                    f"the current one {now.size} (rollback)"
                )
            proof = reader.consistency_proof(before.size) if before.size else []
            if before.size:
                verify_consistency(before.size, now.size, proof, before.root, now.root)
        except (VerificationError, MalformedError) as exc:
            fail(f"not consistent: {exc}", EXIT_VERIFY_FAILED)
    for h in proof:
        typer.echo(b64encode(h))
    err_console.print(f"ok: size {now.size} extends size {before.size}", highlight=False)


@app.command("export")
def export(
    log: LogDir,
    fmt: Annotated[ExportFormat, typer.Option("--format", help="jsonl or csv.")] = (
        ExportFormat.jsonl
    ),
) -> None:
    """Export every entry for a supervisor (jsonl: the exact entry bytes, one per line)."""
    with _reader(log) as reader:
        if fmt is ExportFormat.jsonl:
            out = sys.stdout.buffer
            for _, data in reader.iter_entries():
                out.write(data + b"\n")
            out.flush()
            return
        writer = csv.writer(sys.stdout, lineterminator="\n")
        columns = _COLUMNS + _WIDE
        writer.writerow(columns)
        for _, data in reader.iter_entries():
            row = _row(Entry.from_bytes(data))
            writer.writerow(["" if row[c] is None else row[c] for c in columns])
