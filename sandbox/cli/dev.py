"""``sandboxctl dev``: a real local control plane for development and tests."""

from __future__ import annotations

import signal
import threading
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from sandbox.cli.dev_chart import chart
from sandbox.cli.dev_images import images
from sandbox.cli.logsetup import configure_process_logging
from sandbox.cli.output import OutputFormat, err_console, fail, print_data, print_rows
from sandbox.cli.progress import Progress, QuietOpt
from sandbox.devenv.controlplane import DEFAULT_DIR, ControlPlane
from sandbox.devenv.toolchain import TOOLS, bin_dir, build_tools
from sandbox.errors import SandboxError

__all__ = ["app"]

app = typer.Typer(
    help="Run a local control plane (etcd, kube-apiserver, controllers).", no_args_is_help=True
)

app.command("images")(images)
app.command("chart")(chart)

DirOption = Annotated[
    Path, typer.Option("--dir", help="Directory for state, certificates, data and logs.")
]


@app.command("up")
def up(
    directory: DirOption = DEFAULT_DIR,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 90.0,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Stay attached; Ctrl-C stops everything.")
    ] = False,
    durable_etcd: Annotated[
        bool,
        typer.Option("--durable-etcd", help="Keep etcd's fsyncs (slower, survives power loss)."),
    ] = False,
    data_plane: Annotated[
        bool,
        typer.Option(
            "--data-plane",
            help=(
                "Add a node on which pods run (containerd, kubelet, kube-proxy, kube-router, "
                "CoreDNS, kube-scheduler) in namespaces of its own; needs root."
            ),
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Start etcd, kube-apiserver and kube-controller-manager and wait until ready."""
    if data_plane and timeout == 90.0:
        timeout = 240.0  # the node, its images and CoreDNS come on top
    plane = ControlPlane(directory, durable_etcd=durable_etcd, data_plane=data_plane)
    try:
        state = plane.up(timeout=timeout, progress=Progress(quiet=quiet).note)
    except SandboxError as exc:
        fail(str(exc))
    kubeconfig = plane.admin_kubeconfig
    typer.echo(f"control plane ready at {state.server}")
    node = plane.node.status() if data_plane else None
    if node:
        typer.echo(
            f"node {node['name']} ready at {node['nodeIP']} "
            f"(host link {node['hostInterface']} {node['hostIP']})"
        )
    typer.echo(f"  export KUBECONFIG={kubeconfig}")
    typer.echo(f"  {bin_dir() / TOOLS['kubectl'].filename} get namespaces")
    typer.echo(f"  sandboxctl dev user alice --group tenant-a --dir {directory}")
    if foreground:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        err_console.print("running in the foreground; press Ctrl-C to stop")
        stop.wait()
        stopped = plane.down()
        typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command("down")
def down(directory: DirOption = DEFAULT_DIR) -> None:
    """Stop every process the control plane in DIR started (idempotent)."""
    try:
        stopped = ControlPlane(directory).down()
    except SandboxError as exc:
        fail(str(exc))
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command("status")
def status(
    directory: DirOption = DEFAULT_DIR,
    output: Annotated[OutputFormat, typer.Option("-o", "--output")] = OutputFormat.table,
) -> None:
    """Show whether the control plane in DIR is running and ready (exit 1 if not)."""
    info = ControlPlane(directory).status()
    if output in (OutputFormat.json, OutputFormat.yaml):
        print_data(info, output)
    else:
        rows = [
            {"server": name, "pid": s["pid"], "running": s["running"]}
            for name, s in info["servers"].items()
        ]
        if rows:
            node = info.get("node")
            if node:
                rows += [
                    {"server": name, "pid": p["pid"], "running": p["running"]}
                    for name, p in node["processes"].items()
                ]
            print_rows(rows, ["server", "pid", "running"], output, name_key="server")
            typer.echo(f"api: {info['server']} ready={info['ready']}")
            if node:
                typer.echo(
                    f"node: {node['name']} {node['nodeIP']} ready={node['ready']} "
                    f"(host link {node['hostInterface']} {node['hostIP']})"
                )
        else:
            typer.echo(f"no control plane in {info['directory']}")
    node = info.get("node")
    if not info.get("ready") or (node and not node["ready"]):
        raise typer.Exit(1)


@app.command("user")
def user(
    name: Annotated[str, typer.Argument(help="User name (the certificate's CN).")],
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Group (repeatable).")
    ] = None,
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Write DIR/users/NAME.kubeconfig with a client certificate for NAME and groups."""
    try:
        path = ControlPlane(directory).add_user(name, group or [])
    except SandboxError as exc:
        fail(str(exc))
    typer.echo(str(path))


@app.command("tools")
def tools(
    build: Annotated[bool, typer.Option("--build", help="Build the missing tools.")] = False,
    name: Annotated[list[str] | None, typer.Option("--name", help="Only this tool.")] = None,
    tools_dir: Annotated[
        Path | None, typer.Option(help="The repository's tools/ directory.")
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """List the pinned tools and where they are cached; --build builds missing ones."""
    if build:
        try:
            build_tools(name, tools_dir=tools_dir, progress=Progress(quiet=quiet).note)
        except SandboxError as exc:
            fail(str(exc))
    rows = []
    for tool in TOOLS.values():
        if name and tool.name not in name:
            continue
        path = bin_dir() / tool.filename
        rows.append(
            {
                "name": tool.name,
                "version": tool.version,
                "cached": path.is_file(),
                "path": str(path),
            }
        )
    print_rows(rows, ["name", "version", "cached"], OutputFormat.wide, wide_columns=["path"])


class StackMode(StrEnum):
    """What runs the components of ``dev stack`` and ``dev demo``."""

    auto = "auto"
    chart = "chart"
    processes = "processes"


ModeOption = Annotated[
    StackMode,
    typer.Option(
        "--mode",
        help="chart: the Helm chart's pods on a local node (root); processes: each component "
        "a process on loopback; auto: the chart where this machine can host a node.",
    ),
]


def _mode_for_keys(mode: StackMode, key_provider: str) -> StackMode:
    """pkcs11 runs the components as processes (the SoftHSM2 token is on this machine)."""
    if key_provider not in ("local", "pkcs11"):
        raise typer.BadParameter("use local or pkcs11", param_hint="--key-provider")
    if key_provider == "local":
        return mode
    if mode is StackMode.chart:
        raise typer.BadParameter(
            "the local node's operator image has no SoftHSM2 token; use --mode processes",
            param_hint="--key-provider pkcs11",
        )
    return StackMode.processes


@app.command("stack")
def stack(
    directory: Annotated[
        Path, typer.Option("--dir", help="Directory for all state and logs.")
    ] = Path(".regsandbox/stack"),
    repo: Annotated[
        Path, typer.Option(help="The regsandbox checkout (examples, policies).")
    ] = Path(),
    mode: ModeOption = StackMode.auto,
    quiet: QuietOpt = False,
    key_provider: Annotated[
        str,
        typer.Option(
            "--key-provider",
            help="local, or pkcs11: a SoftHSM2 token initialised under --dir (processes mode).",
        ),
    ] = "local",
) -> None:
    """Run everything locally — control plane, MinIO, audit service, gateway, operator.

    Where this machine can host a node (root, namespaces) the Helm chart is installed on it
    from locally built images and sandbox workloads run as pods; elsewhere each component
    is a process. Stays in the foreground; Ctrl-C stops everything it started.
    """
    from sandbox.devenv.dataplane import unavailable_reason
    from sandbox.devenv.stack import StackSettings, running_stack

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    configure_process_logging()
    progress = Progress(quiet=quiet)
    settings = StackSettings(
        directory=directory, repo=repo.resolve(), progress=progress.note, key_provider=key_provider
    )
    mode = _mode_for_keys(mode, key_provider)
    if mode is StackMode.auto:
        reason = unavailable_reason()
        if reason is not None:
            err_console.print(
                f"no local node ({reason}): running the components as processes", highlight=False
            )
        mode = StackMode.processes if reason else StackMode.chart
    try:
        if mode is StackMode.chart:
            from sandbox.devenv.chartstack import running_chart_stack

            with running_chart_stack(settings) as on_node:
                _explain(on_node.plane.admin_kubeconfig, on_node.audit_log)
                typer.echo(
                    f"the chart's pods run on a local node ({', '.join(on_node.release.images)}); "
                    f"workloads reach the gateway at {on_node.gateway_url}"
                )
                typer.echo("press Ctrl-C to uninstall and stop everything")
                while not stop.wait(2.0):
                    on_node.check()
        else:
            with running_stack(settings) as running:
                _explain(running.plane.admin_kubeconfig, running.audit_log)
                typer.echo(f"audit service: {running.audit_url}   gateway: {running.gateway_url}")
                typer.echo("press Ctrl-C to stop everything")
                while not stop.wait(1.0):
                    running.check()
    except SandboxError as exc:
        fail(str(exc))
    typer.echo("stopped")


def _explain(kubeconfig: Path, audit_log: Path) -> None:
    kubectl = bin_dir() / TOOLS["kubectl"].filename
    typer.echo("regsandbox is running. In another terminal:")
    typer.echo(f"  export KUBECONFIG={kubeconfig}")
    typer.echo(f"  {kubectl} get tenants,datasets")
    typer.echo(f"  {kubectl} apply -f examples/finance/sandbox-fraud-model.yaml")
    typer.echo(f"  {kubectl} get sandboxes -A -o wide")
    typer.echo(f"  {kubectl} apply -f examples/finance/sandbox-violating.yaml")
    typer.echo(
        f"  {kubectl} get sandbox -n tenant-lux-bank marketing-model "
        "-o jsonpath='{.status.conditions}'"
    )
    typer.echo(f"  sandboxctl audit log --log {audit_log}")


@app.command("demo")
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Scratch directory (wiped first).")
    ] = Path(".regsandbox/demo"),
    repo: Annotated[Path, typer.Option(help="The regsandbox checkout.")] = Path(),
    mode: ModeOption = StackMode.auto,
) -> None:
    """A non-interactive tour on a fresh stack; exit 1 if any step misbehaves."""
    import shutil

    from sandbox.devenv.demo import run_demo

    configure_process_logging()
    shutil.rmtree(directory, ignore_errors=True)
    if not run_demo(repo.resolve(), directory, mode=mode.value):
        raise typer.Exit(1)
