"""``sandboxctl gateway``: run the dataset gateway.

``serve`` reads its settings from ``REGSANDBOX_GATEWAY_*`` environment variables (see
:class:`~sandbox.gateway.settings.GatewaySettings`); the few options here override them.
Secrets are taken from the environment or files only, never from the command line.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from sandbox.cli.logsetup import configure_process_logging
from sandbox.cli.output import EXIT_USAGE, fail
from sandbox.errors import ConfigurationError

__all__ = ["app", "serve"]

app = typer.Typer(
    help="Run the dataset gateway that sandbox workloads read datasets through.",
    no_args_is_help=True,
)


@app.callback()
def gateway() -> None:
    """Run the dataset gateway that sandbox workloads read datasets through."""


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--listen {value!r}: want HOST:PORT, e.g. 0.0.0.0:8443", EXIT_USAGE)
    return host.strip("[]"), int(port)


@app.command("serve")
def serve(
    listen: Annotated[str, typer.Option("--listen", help="HOST:PORT to listen on.")] = (
        "127.0.0.1:8443"
    ),
    kubeconfig: Annotated[
        Path | None,
        typer.Option("--kubeconfig", help="Kubeconfig (default: in-cluster ServiceAccount)."),
    ] = None,
    audit_url: Annotated[
        str | None, typer.Option("--audit-url", help="URL of `sandboxctl audit serve`.")
    ] = None,
    audit_log_dir: Annotated[
        Path | None, typer.Option("--audit-log", help="Audit log directory written in-process.")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serving certificate (PEM).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="Its private key.")] = None,
    metrics_listen: Annotated[
        str | None,
        typer.Option(
            "--metrics-listen",
            help="HOST:PORT serving Prometheus metrics at /metrics (apart from the API port, "
            "which sandboxes reach); default: not served.",
        ),
    ] = None,
) -> None:
    """Serve the gateway's HTTP API; every dataset request is audited before it completes."""
    from sandbox.gateway import build_gateway, create_app
    from sandbox.gateway.build import s3_surface
    from sandbox.gateway.settings import GatewaySettings

    host, port = _listen(listen)
    metrics_at = _listen(metrics_listen) if metrics_listen else None
    if (tls_cert is None) != (tls_key is None):
        fail("give both --tls-cert and --tls-key, or neither", EXIT_USAGE)
    configure_process_logging()
    overrides: dict[str, object] = {}
    if kubeconfig is not None:
        overrides["kubeconfig"] = kubeconfig
    if audit_url is not None:
        overrides["audit_url"] = audit_url
    if audit_log_dir is not None:
        overrides["audit_log_dir"] = audit_log_dir
    with ExitStack() as stack:
        try:
            settings = GatewaySettings.load(**overrides)
            gateway = build_gateway(settings, stack)
            s3 = s3_surface(settings, gateway)
        except ConfigurationError as exc:
            fail(str(exc))
        if metrics_at is not None:
            from sandbox.gateway.metrics import serve_metrics

            serve_metrics(*metrics_at)
        config = uvicorn.Config(
            create_app(gateway, s3),
            host=host,
            port=port,
            log_config=None,  # uvicorn's lines go through sandbox.logs like ours
            log_level="warning",
            access_log=False,  # the gateway logs each request itself, without its headers
            server_header=False,
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
        )
        uvicorn.Server(config).run()
