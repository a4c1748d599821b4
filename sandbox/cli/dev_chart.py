"""``sandboxctl dev chart``: the Helm chart running on a local node, from local images."""

from __future__ import annotations

import signal
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from sandbox.cli.logsetup import configure_process_logging
from sandbox.cli.output import fail
from sandbox.cli.progress import Progress, QuietOpt
from sandbox.errors import SandboxError

__all__ = ["chart"]


def chart(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory for all state and logs.")
    ] = Path(".regsandbox/chart"),
    repo: Annotated[Path, typer.Option(help="The regsandbox checkout (chart, sources).")] = Path(),
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the node and for the release.")
    ] = 300.0,
    quiet: QuietOpt = False,
) -> None:
    """Run the chart as a platform engineer would: a node, MinIO, helm install, all Ready.

    Starts a control plane with a node (needs root), MinIO where pods reach it, builds
    the regsandbox and opa images from the checkout (cached by content) and installs
    charts/regsandbox with them: the operator with its OPA sidecar, two gateways, the
    audit service. Stays in the foreground; Ctrl-C uninstalls and stops everything.
    """
    from sandbox.devenv.chart import install_chart, uninstall_chart, wait_release_ready
    from sandbox.devenv.controlplane import ControlPlane
    from sandbox.devenv.minio import running_minio
    from sandbox.devenv.toolchain import TOOLS, bin_dir
    from sandbox.kube.clients import kube_client

    configure_process_logging()
    progress = Progress(quiet=quiet).note
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    base = directory.resolve()
    plane = ControlPlane(base / "cp", data_plane=True)
    try:
        with ExitStack() as stack:
            stack.callback(plane.down)
            plane.up(timeout=timeout, progress=progress)
            state = plane.load_state()
            assert state is not None
            progress(f"starting MinIO on the node's link ({state.bind_address})")
            storage = stack.enter_context(running_minio(base / "minio", host=state.bind_address))
            release = install_chart(
                plane,
                repo=repo.resolve(),
                storage=storage,
                directory=base / "release",
                progress=progress,
            )
            stack.callback(uninstall_chart, release)
            progress("waiting for the operator, the gateways and the audit service")
            waited = wait_release_ready(
                kube_client(plane.admin_kubeconfig), release, timeout=timeout
            )
            kubectl = bin_dir() / TOOLS["kubectl"].filename
            typer.echo(
                f"release {release.name} Ready in {waited:.0f}s: "
                f"{release.operator_replicas} operators (one leads) with OPA sidecars, "
                f"{release.gateway_replicas} gateways, audit service "
                f"({', '.join(release.images)})"
            )
            typer.echo(f"  export KUBECONFIG={plane.admin_kubeconfig}")
            typer.echo(f"  {kubectl} get pods -n {release.namespace} -o wide")
            typer.echo(f"  sandboxctl audit log --log {release.audit_volume / 'log'}")
            typer.echo(
                f"MinIO for datasets (the gateway holds its credentials): {storage.endpoint}"
            )
            typer.echo("press Ctrl-C to uninstall and stop everything", err=True)
            while not stop.wait(1.0):
                pass
    except SandboxError as exc:
        fail(str(exc))
    typer.echo("stopped")
