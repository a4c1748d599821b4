"""``sandboxctl audit archive …`` and the archive options of ``sandboxctl audit serve``.

- ``archive verify`` checks a WORM archive on its own, without the log (which may be
  gone): every bundle re-hashed into the archived signed checkpoints, every object
  under COMPLIANCE retention, gaps and objects written over. Exit 0 ok, 3 verification
  failed, 1 error (the bucket cannot be read).
- :func:`start_archiver` is what ``audit serve --archive-bucket …`` runs: an
  :class:`audit.archiver.Archiver` in the background of the service.

S3 credentials come from the environment as boto3 reads them (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, web identity, …);
they are never options, so they never appear in a process list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from fastapi import FastAPI

from audit.archive import ArchiveError, ArchiveVerification, S3Archive
from audit.archiver import Archiver, ArchiverSource, s3_client
from audit.errors import AuditError
from audit.note import Verifier, b64encode
from audit.signing import load_verifier
from sandbox.cli.output import (
    EXIT_ERROR,
    EXIT_USAGE,
    EXIT_VERIFY_FAILED,
    OutputFormat,
    err_console,
    fail,
    print_data,
)

__all__ = [
    "ArchiveBucket",
    "ArchiveEndpoint",
    "ArchiveInterval",
    "ArchivePrefix",
    "ArchiveRegion",
    "ArchiveRetentionDays",
    "app",
    "start_archiver",
]

app = typer.Typer(help="The WORM archive of the audit log in S3.", no_args_is_help=True)

ArchiveBucket = Annotated[
    str | None,
    typer.Option(
        "--archive-bucket",
        help="Archive entries and checkpoints to this S3 bucket (Object Lock, COMPLIANCE).",
    ),
]
ArchivePrefix = Annotated[
    str, typer.Option("--archive-prefix", help="Key prefix in the archive bucket.")
]
ArchiveEndpoint = Annotated[
    str | None,
    typer.Option("--archive-endpoint", help="S3 endpoint URL (default: AWS)."),
]
ArchiveRegion = Annotated[
    str | None, typer.Option("--archive-region", help="S3 region of the archive bucket.")
]
ArchiveRetentionDays = Annotated[
    int | None,
    typer.Option(
        "--archive-retention-days",
        min=1,
        help="Retain each object this many days in COMPLIANCE mode, and create the bucket "
        "with Object Lock if missing (default: rely on the bucket's own COMPLIANCE default).",
    ),
]
ArchiveInterval = Annotated[
    float,
    typer.Option("--archive-interval", min=0.1, help="Seconds between archive passes."),
]


def start_archiver(
    source: ArchiverSource,
    service: FastAPI,
    *,
    bucket: str | None,
    prefix: str = "",
    endpoint: str | None = None,
    region: str | None = None,
    retention_days: int | None = None,
    interval: float = 30.0,
) -> Archiver | None:
    """Start archiving ``source`` if a bucket is given; serve its status on ``service``.

    Metrics go to the service's registry (``service.state.metrics``) when it has one.
    Returns ``None`` (and starts nothing) without a bucket; other archive options
    without a bucket are a usage error.
    """
    if not bucket:
        if prefix or endpoint or region or retention_days is not None:
            fail("the --archive-* options need --archive-bucket", EXIT_USAGE)
        return None
    try:
        archive = S3Archive(
            s3_client(endpoint, region), bucket, prefix, retention_days=retention_days
        )
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    metrics = getattr(service.state, "metrics", None)
    archiver = Archiver(
        archive,
        source,
        interval=interval,
        retention_days=retention_days,
        registry=getattr(metrics, "registry", None),
    )
    archiver.install(service)
    archiver.start()
    return archiver


def _verifiers(values: list[str]) -> list[Verifier]:
    verifiers = []
    for value in values:
        try:
            if "+" not in value and Path(value).is_file():
                verifiers.append(load_verifier(Path(value)))
            else:
                verifiers.append(Verifier.from_vkey(value))
        except AuditError as exc:
            fail(f"--vkey {value}: {exc}", EXIT_USAGE)
    return verifiers


def _document(result: ArchiveVerification, bucket: str, prefix: str) -> dict[str, Any]:
    latest = result.latest
    return {
        "ok": result.ok,
        "bucket": bucket,
        "prefix": prefix,
        "entries": result.entries,
        "verified": result.verified,
        "checkpoints": result.checkpoints,
        "objects": result.objects,
        "latest": None
        if latest is None
        else {"origin": latest.origin, "size": latest.size, "root": b64encode(latest.root)},
        "retention": None
        if result.retention is None
        else {"mode": result.retention[0], "days": result.retention[1]},
        "findings": [
            {"code": f.code, "fatal": f.fatal, "key": f.key, "message": f.message}
            for f in result.findings
        ],
    }


@app.command("verify")
def verify(
    bucket: Annotated[str, typer.Option("--bucket", help="The archive bucket.")],
    vkey: Annotated[
        list[str],
        typer.Option(
            "--vkey",
            help="Trusted verifier key of the log (a file, or name+id+key); repeat during a "
            "key rotation.",
        ),
    ],
    prefix: Annotated[str, typer.Option("--prefix", help="Key prefix of the archive.")] = "",
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="S3 endpoint URL (default: AWS).")
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="S3 region.")] = None,
    output: Annotated[
        OutputFormat, typer.Option("-o", "--output", help="table, json or yaml.")
    ] = OutputFormat.table,
) -> None:
    """Verify the archive alone: bundles against signed checkpoints, retention, gaps.

    Exit 0 if it verifies, 3 if it does not, 1 if it cannot be read.
    """
    verifiers = _verifiers(vkey)
    archive = S3Archive(s3_client(endpoint, region), bucket, prefix)
    try:
        result = archive.verify_archive(verifiers)
    except ArchiveError as exc:
        fail(str(exc), EXIT_ERROR)
    if output in (OutputFormat.json, OutputFormat.yaml):
        print_data(_document(result, bucket, archive.prefix), output)
    else:
        where = f"s3://{bucket}/{archive.prefix}"
        for f in result.findings:
            err_console.print(
                f"{'FAIL' if f.fatal else 'note'} {f.code}: {f.message}", highlight=False
            )
        if result.ok:
            latest = result.latest
            signed = f"checkpoint {latest.size} ({b64encode(latest.root)})" if latest else "none"
            typer.echo(
                f"ok: {where}: {result.entries} entries in {result.objects} objects; "
                f"{result.checkpoints} checkpoints verify and agree; latest {signed}; "
                "every object under COMPLIANCE retention"
            )
    if not result.ok:
        failures = sum(f.fatal for f in result.findings)
        err_console.print(
            f"[red]verification failed:[/red] {failures} finding(s) in s3://{bucket}/"
            f"{archive.prefix}",
            highlight=False,
        )
        raise typer.Exit(EXIT_VERIFY_FAILED)
