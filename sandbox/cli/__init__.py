"""``sandboxctl`` (also installed as the kubectl plugin ``kubectl-sandbox``).

Each command group lives in its own module and is mounted here.
"""

from __future__ import annotations

import typer

from sandbox import __version__
from sandbox.cli import audit, dev, evidence, export, gateway, policy

__all__ = ["app", "main"]

app = typer.Typer(
    name="sandboxctl",
    help="Operate and inspect regsandbox: policies, audit log, exports, gateway, local stack.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
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
