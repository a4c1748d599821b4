"""``sandboxctl audit siem-export``: stream the log to a SIEM as OCSF events over OTLP/HTTP.

Reads the whole log, through the audit service (``--server``, the platform auditor's
scope) or in place (``--log``), and forwards every checkpointed entry past the cursor
file to an OTLP/HTTP logs endpoint (:mod:`audit.siem`). Kill it and start it again with
the same ``--cursor``: it resumes after the last batch the receiver acknowledged, so
nothing is lost and only that one unacknowledged batch can arrive twice, with the same
``metadata.uid``. Timeouts, 5xx, 408 and 429 are retried every ``--interval``; a receiver
that refuses a batch for good stops the exporter (exit 1) with the cursor unmoved.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from audit.client import AuditClient, AuditUnavailable
from audit.errors import AuditError
from audit.log import LogReader
from audit.siem import Cursor, EntrySource, Exporter, LocalSource, OtlpSink
from sandbox.cli import audit_remote
from sandbox.cli.audit_remote import ContextOpt, KubeconfigOpt, ServerOpt, TokenFileOpt
from sandbox.cli.output import EXIT_USAGE, fail

__all__ = ["register"]


def siem_export(
    otlp_url: Annotated[
        str, typer.Option("--otlp-url", help="OTLP/HTTP logs endpoint, e.g. http://c:4318/v1/logs.")
    ],
    cursor: Annotated[
        Path, typer.Option("--cursor", help="File holding the next index to forward.")
    ],
    vkey: Annotated[
        str, typer.Option("--vkey", help="The log's published verifier key (file or text).")
    ],
    log: Annotated[Path | None, typer.Option("--log", help="Read a log directory.")] = None,
    server: ServerOpt = None,
    token_file: TokenFileOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    once: Annotated[bool, typer.Option("--once", help="Forward what there is, then stop.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0.05)] = 5.0,
    batch: Annotated[int, typer.Option(help="Entries per request.", min=1, max=1000)] = 256,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the receiver's answer.", min=0.1)
    ] = 10.0,
) -> None:
    """Forward audit entries as OCSF events over OTLP/HTTP, resumable from --cursor."""
    from sandbox.cli.audit import _verifiers  # the one parser of --vkey

    if (log is None) == (server is None):
        fail("give --log DIR or --server URL (one of them)", EXIT_USAGE)
    verifiers = _verifiers(vkey)
    source: EntrySource
    if server is not None:
        token = audit_remote.bearer_token(token_file, kubeconfig, context)
        source = AuditClient(server, token, timeout=30)
    else:
        assert log is not None
        try:
            source = LocalSource(LogReader(log))
        except (AuditError, OSError) as exc:
            fail(f"cannot open log {log}: {exc}")
    sink = OtlpSink(otlp_url, timeout=timeout)
    exporter = Exporter(source, sink, Cursor(cursor), verifiers, batch=batch)
    try:
        if once:
            sent = exporter.run_once()
            typer.echo(f"ok: {sent} entries forwarded; next index {exporter.cursor.load()}")
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            exporter.run(stop, interval)
        except KeyboardInterrupt:
            stop.set()
    except AuditUnavailable as exc:
        audit_remote.unavailable(exc)
    except AuditError as exc:
        fail(str(exc))
    finally:
        sink.close()


def register(app: typer.Typer) -> None:
    """Add ``siem-export`` to ``app`` (the ``sandboxctl audit`` app)."""
    app.command("siem-export")(siem_export)
