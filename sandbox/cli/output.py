"""Output helpers shared by every ``sandboxctl`` command.

Data goes to stdout, diagnostics to stderr, following the kubectl conventions:
``-o table|wide|json|yaml|name`` and mutations printed as ``kind/name verbed``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_VERIFY_FAILED",
    "OutputFormat",
    "err_console",
    "fail",
    "print_data",
    "print_rows",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_VERIFY_FAILED = 3

err_console = Console(stderr=True, soft_wrap=True)
"""Console for diagnostics; never used for data."""


class OutputFormat(StrEnum):
    """The ``-o`` choices shared by all list and show commands."""

    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"
    name = "name"
    csv = "csv"


def print_data(data: Any, fmt: OutputFormat) -> None:
    """Print one document as JSON or YAML to stdout."""
    if fmt is OutputFormat.yaml:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    else:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def print_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: OutputFormat,
    *,
    wide_columns: Sequence[str] = (),
    name_key: str = "name",
    header: bool = True,
) -> None:
    """Print a list of records in the requested format.

    ``columns`` are shown for ``table``; ``wide`` adds ``wide_columns``. ``json`` and
    ``yaml`` print the records whole; ``csv`` prints every table and wide column.
    ``header=False`` leaves out the column names (rows that follow a first listing).
    """
    if fmt in (OutputFormat.json, OutputFormat.yaml):
        print_data([dict(r) for r in rows], fmt)
        return
    if fmt is OutputFormat.name:
        for row in rows:
            sys.stdout.write(f"{row[name_key]}\n")
        return
    shown = list(columns) + (
        list(wide_columns) if fmt in (OutputFormat.wide, OutputFormat.csv) else []
    )
    if fmt is OutputFormat.csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        if header:
            writer.writerow(shown)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in shown])
        return
    table = Table(box=None, pad_edge=False, show_edge=False, show_header=header)
    for col in shown:
        table.add_column(col.upper().replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*["" if row.get(c) is None else str(row.get(c)) for c in shown])
    Console(soft_wrap=True).print(table)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``."""
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    raise typer.Exit(code)
