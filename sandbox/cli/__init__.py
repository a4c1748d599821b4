"""``sandboxctl`` (also installed as the kubectl plugin ``kubectl-sandbox``).

Each command group lives in its own module and is mounted here.
"""

from __future__ import annotations

from typing import Annotated

import typer

from sandbox import __version__
from sandbox.cli import audit, dev, evidence, export, gateway, logsetup, policy

__all__ = ["app", "main"]

app = typer.Typer(
    name="sandboxctl",
    help="Operate and inspect regsandbox: policies, audit log, exports, gateway, local stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="Logs of servers and local stacks: json, console, or auto (JSON in a "
            "cluster or a pipe, readable on a terminal).",
            envvar="REGSANDBOX_LOG_FORMAT",
        ),
    ] = "auto",
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO (servers' default), WARNING or ERROR."),
    ] = None,
) -> None:
    """Operate and inspect regsandbox: policies, audit log, exports, gateway, local stack."""
    logsetup.set_options(log_format, log_level)


app.add_typer(dev.app, name="dev")
app.add_typer(audit.app, name="audit")
app.add_typer(policy.app, name="policy")
app.add_typer(gateway.app, name="gateway")
app.add_typer(export.app, name="export")
app.add_typer(evidence.app, name="evidence")


@app.command("version")
def version() -> None:
    """Print the regsandbox version."""
    typer.echo(__version__)


def main() -> None:
    """Console-script entry point."""
    app()
