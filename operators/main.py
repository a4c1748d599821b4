"""``sandbox-operator``: run the regsandbox operator."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from operators import runtime
from operators.keys import app as keys_app
from operators.logs import configure_logging
from operators.settings import OperatorSettings

__all__ = ["LEADERSHIP_LOST_EXIT", "app", "main"]

LEADERSHIP_LOST_EXIT = 75
"""Exit status of a leader that could not renew its Lease in time (it restarts as a standby)."""

app = typer.Typer(help="The regsandbox operator.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """The regsandbox operator."""


app.add_typer(keys_app, name="keys")


@app.command("run")
def run(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="Kubeconfig (default: in-cluster).", envvar="REGSANDBOX_KUBECONFIG"),
    ] = None,
    liveness: Annotated[
        str | None, typer.Option(help="kopf liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    ] = None,
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            help="json, console, or auto: JSON in a cluster or a pipe, readable on a terminal.",
            envvar="REGSANDBOX_LOG_FORMAT",
        ),
    ] = "auto",
) -> None:
    """Run the operator until interrupted; settings come from REGSANDBOX_* variables."""
    from operators.memory import limit_malloc_arenas

    limit_malloc_arenas()  # before any handler or watch thread starts
    import kopf

    settings = OperatorSettings(kubeconfig=kubeconfig)
    try:
        configure_logging(settings.log_level, log_format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if settings.kubeconfig:
        # kopf's own client reads the same kubeconfig as ours.
        os.environ["KUBECONFIG"] = str(settings.kubeconfig)
    runtime.configure(settings)
    import operators.handlers  # noqa: F401 - registers the handlers with kopf
    from operators.metrics import LEADER, serve

    if settings.metrics_port:  # standbys serve metrics too (regsandbox_operator_leader 0)
        serve(settings.metrics_host, settings.metrics_port)
    if not settings.leader_election:
        LEADER.set(1)
        asyncio.run(kopf.operator(clusterwide=True, standalone=True, liveness_endpoint=liveness))
        return
    from operators.leader import LeaderElector, lead
    from operators.wiring import api_client

    elector = LeaderElector(api_client(settings), settings.lease_settings())
    asyncio.run(
        lead(
            elector,
            lambda: kopf.operator(clusterwide=True, standalone=True, liveness_endpoint=liveness),
            on_lost=_stop_now,
            liveness=liveness,
        )
    )


def _stop_now() -> None:
    """Leave at once, handlers and all: another replica may lead within seconds."""
    sys.stderr.flush()
    os._exit(LEADERSHIP_LOST_EXIT)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
