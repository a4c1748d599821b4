"""``sandboxctl export``: list, show, review and get the receipt of ModelExports.

``approve``, ``reject`` and ``revoke`` create an ExportReview as the current kubeconfig
user: the user name (and groups) come from a SelfSubjectReview, so they are exactly
what admission will check. Exit codes: 0 ok, 1 error (including a refused review),
2 usage.
"""

from __future__ import annotations

import functools
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from sandbox.api.conditions import find_condition, is_true
from sandbox.api.export import EXPORT_CONDITIONS
from sandbox.api.meta import API_GROUP, API_VERSION
from sandbox.cli.output import (
    EXIT_USAGE,
    OutputFormat,
    err_console,
    fail,
    print_data,
    print_rows,
)
from sandbox.cli.progress import Progress, QuietOpt
from sandbox.kube.apply import api_message

__all__ = ["app", "export_state"]

app = typer.Typer(
    help="Model exports: list, show, approve, reject, revoke, receipt.", no_args_is_help=True
)

Namespace = Annotated[
    str | None,
    typer.Option("-n", "--namespace", help="Namespace (default: the context's namespace)."),
]
Kubeconfig = Annotated[Path | None, typer.Option("--kubeconfig", help="Kubeconfig file.")]
Context = Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")]
Output = Annotated[OutputFormat, typer.Option("-o", "--output", help="Output format.")]
Comment = Annotated[str, typer.Option("--comment", "-m", help="Why; goes to the audit log.")]
Wait = Annotated[
    float,
    typer.Option("--wait", help="Seconds to wait for the operator's verdict (0: do not wait)."),
]

_PLURAL = "modelexports"
_REVIEWS = "exportreviews"


def _connect(kubeconfig: Path | None, context: str | None) -> tuple[client.ApiClient, str]:
    """An API client and the context's namespace."""
    path = str(kubeconfig) if kubeconfig else None
    try:
        api = config.new_client_from_config(config_file=path, context=context)
        contexts, active = config.list_kube_config_contexts(config_file=path)
    except (config.ConfigException, OSError) as exc:
        fail(f"cannot load kubeconfig: {exc}", EXIT_USAGE)
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    namespace = str(((chosen or {}).get("context") or {}).get("namespace") or "default")
    return api, namespace


def _objects(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def export_state(obj: dict[str, Any]) -> str:
    """One word for where the export is: the latest lifecycle condition that holds."""
    conds = (obj.get("status") or {}).get("conditions")
    for type_ in reversed(EXPORT_CONDITIONS):
        if is_true(conds, type_):
            return type_
    return "Pending"


def _row(obj: dict[str, Any]) -> dict[str, Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    required = status.get("requiredApprovals")
    count = int(status.get("approvalCount") or 0)
    return {
        "name": obj["metadata"]["name"],
        "namespace": obj["metadata"].get("namespace"),
        "sandbox": spec.get("sandbox"),
        "type": (spec.get("artifact") or {}).get("type"),
        "state": export_state(obj),
        "approvals": f"{count}/{required}" if required else str(count),
        "requested_by": spec.get("requestedBy"),
        "destination": status.get("destinationUri")
        or (spec.get("destination") or {}).get("bucket"),
        "sha256": status.get("sha256"),
        "released_at": status.get("releasedAt"),
    }


def _get(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    try:
        found = _objects(api).get_namespaced_custom_object(
            API_GROUP, API_VERSION, namespace, _PLURAL, name
        )
    except ApiException as exc:
        fail(f"modelexport/{name}: {api_message(exc)}")
    return dict(found)


AllNamespaces = Annotated[
    bool, typer.Option("-A", "--all-namespaces", help="List across all namespaces.")
]
Selector = Annotated[
    str | None,
    typer.Option("-l", "--selector", help="Label selector, e.g. team=risk,stage!=test."),
]
WatchFlag = Annotated[
    bool,
    typer.Option("-w", "--watch", help="After listing, print every change until interrupted."),
]

_COLUMNS = ["name", "sandbox", "type", "state", "approvals", "requested_by"]
_WIDE = ["destination", "sha256", "released_at"]


def _print_one(obj: dict[str, Any], columns: list[str], output: OutputFormat) -> None:
    """One object that changed while watching: a document, or a row without header."""
    if output in (OutputFormat.json, OutputFormat.yaml):
        if output is OutputFormat.yaml:
            sys.stdout.write("---\n")
        print_data(obj, output)
    else:
        print_rows([_row(obj)], columns, output, wide_columns=_WIDE, header=False)
    sys.stdout.flush()


@app.command("list")
def list_exports(
    namespace: Namespace = None,
    all_namespaces: AllNamespaces = False,
    selector: Selector = None,
    watch_changes: WatchFlag = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    output: Output = OutputFormat.table,
) -> None:
    """List the ModelExports of a namespace (or all, ``-A``), like ``kubectl get``."""
    if all_namespaces and namespace:
        fail("give either -n/--namespace or -A/--all-namespaces", EXIT_USAGE)
    api, default_ns = _connect(kubeconfig, context)
    objects = _objects(api)
    scope: dict[str, Any] = {"label_selector": selector} if selector else {}
    if all_namespaces:
        call = functools.partial(
            objects.list_cluster_custom_object, API_GROUP, API_VERSION, _PLURAL
        )
    else:
        call = functools.partial(
            objects.list_namespaced_custom_object,
            API_GROUP,
            API_VERSION,
            namespace or default_ns,
            _PLURAL,
        )
    try:
        found = call(**scope)
    except ApiException as exc:
        fail(api_message(exc))
    items = sorted(
        found.get("items", []),
        key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]),
    )
    columns = (["namespace"] if all_namespaces else []) + _COLUMNS
    if output in (OutputFormat.json, OutputFormat.yaml):
        print_data(items, output)
    else:
        print_rows([_row(o) for o in items], columns, output, wide_columns=_WIDE)
    sys.stdout.flush()
    if not watch_changes:
        return
    version = (found.get("metadata") or {}).get("resourceVersion")
    try:
        for event in watch.Watch().stream(call, resource_version=version, **scope):
            _print_one(event["object"], columns, output)
    except KeyboardInterrupt:
        return
    except ApiException as exc:
        fail(api_message(exc))


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="ModelExport name.")],
    namespace: Namespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    output: Output = OutputFormat.table,
) -> None:
    """Show one ModelExport: its request, its state and its conditions."""
    api, default_ns = _connect(kubeconfig, context)
    obj = _get(api, namespace or default_ns, name)
    if output in (OutputFormat.json, OutputFormat.yaml):
        print_data(obj, output)
        return
    if output is OutputFormat.name:
        typer.echo(f"modelexport/{name}")
        return
    row = _row(obj)
    status = obj.get("status") or {}
    for key in ("name", "sandbox", "type", "state", "approvals", "requested_by"):
        typer.echo(f"{key.replace('_', ' ').title() + ':':<14}{row[key] or ''}")
    spec = obj.get("spec") or {}
    typer.echo(f"{'Artifact:':<14}{(spec.get('artifact') or {}).get('path', '')}")
    typer.echo(f"{'Destination:':<14}{row['destination'] or ''}")
    typer.echo(f"{'Sha256:':<14}{status.get('sha256') or ''}")
    typer.echo(f"{'Approved by:':<14}{', '.join(status.get('approvals') or [])}")
    if status.get("revokedBy"):
        typer.echo(f"{'Revoked by:':<14}{status['revokedBy']}: {status.get('revokedReason', '')}")
    print_rows(
        [
            {
                "type": c.get("type"),
                "status": c.get("status"),
                "reason": c.get("reason"),
                "message": c.get("message"),
            }
            for c in status.get("conditions") or []
        ],
        ["type", "status", "reason", "message"],
        OutputFormat.table,
    )


def whoami(api: client.ApiClient) -> tuple[str, list[str]]:
    """User name and groups of the client, as the API server authenticates it."""
    review = client.AuthenticationV1Api(api).create_self_subject_review(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    )
    info = review.status.user_info
    return str(info.username), [g for g in info.groups or [] if not g.startswith("system:")]


def _review(
    decision: str,
    name: str,
    comment: str,
    namespace: str | None,
    kubeconfig: Path | None,
    context: str | None,
    wait: float,
    quiet: bool = False,
) -> None:
    api, default_ns = _connect(kubeconfig, context)
    ns = namespace or default_ns
    _get(api, ns, name)  # fail early on a typo
    try:
        user, groups = whoami(api)
    except ApiException as exc:
        fail(f"cannot tell who you are (SelfSubjectReview): {api_message(exc)}")
    body: dict[str, Any] = {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": "ExportReview",
        "metadata": {
            "name": f"{name[:200]}-{decision}-{secrets.token_hex(3)}",
            "namespace": ns,
        },
        "spec": {
            "export": name,
            "decision": decision,
            "reviewer": user,
            "groups": groups,
            "comment": comment,
        },
    }
    review_name = body["metadata"]["name"]
    try:
        _objects(api).create_namespaced_custom_object(API_GROUP, API_VERSION, ns, _REVIEWS, body)
    except ApiException as exc:
        fail(f"{decision} refused: {api_message(exc)}")
    typer.echo(f"exportreview/{review_name} created")
    deadline = time.monotonic() + wait
    accepted = None
    with Progress(quiet=quiet).task("waiting for the operator's verdict"):
        while accepted is None and time.monotonic() < deadline:
            current = _objects(api).get_namespaced_custom_object(
                API_GROUP, API_VERSION, ns, _REVIEWS, review_name
            )
            conditions = (current.get("status") or {}).get("conditions")
            accepted = find_condition(conditions, "Accepted")
            if accepted is None:
                time.sleep(0.5)
    if accepted is not None:
        if accepted.get("status") != "True":
            fail(f"{decision} refused: {accepted.get('reason')}: {accepted.get('message')}")
        err_console.print(f"{decision} by {user} counts", highlight=False)
        return
    if wait > 0:
        err_console.print("the operator has not judged the review yet", highlight=False)


@app.command("approve")
def approve(
    name: Annotated[str, typer.Argument(help="ModelExport name.")],
    comment: Comment = "",
    namespace: Namespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    wait: Wait = 15.0,
    quiet: QuietOpt = False,
) -> None:
    """Approve an export as the current user (who must be a reviewer, not the requester)."""
    _review("approve", name, comment, namespace, kubeconfig, context, wait, quiet)


@app.command("reject")
def reject(
    name: Annotated[str, typer.Argument(help="ModelExport name.")],
    comment: Comment = "",
    namespace: Namespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    wait: Wait = 15.0,
    quiet: QuietOpt = False,
) -> None:
    """Reject an export as the current user; one accepted rejection closes it."""
    _review("reject", name, comment, namespace, kubeconfig, context, wait, quiet)


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="ModelExport name.")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (required; audited).")],
    namespace: Namespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    wait: Wait = 15.0,
    quiet: QuietOpt = False,
) -> None:
    """Revoke a released export: the released object is removed from the destination."""
    if not comment.strip():
        fail("give the reason with --comment", EXIT_USAGE)
    _review("revoke", name, comment, namespace, kubeconfig, context, wait, quiet)


@app.command("receipt")
def receipt(
    name: Annotated[str, typer.Argument(help="ModelExport name.")],
    namespace: Namespace = None,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Print the C2SP tlog-proof of the export's ``model.export.released`` entry.

    Check it offline with ``sandboxctl audit verify-proof --proof FILE --entry ENTRY
    --vkey KEY``, where ENTRY is the entry at ``status.releaseIndex``
    (``sandboxctl audit entry --raw``).
    """
    api, default_ns = _connect(kubeconfig, context)
    obj = _get(api, namespace or default_ns, name)
    status = obj.get("status") or {}
    text = status.get("receipt")
    if not text:
        fail(f"modelexport/{name} has no receipt: it is {export_state(obj)}, not Released")
    sys.stdout.write(str(text))
    err_console.print(f"entry index {status.get('releaseIndex')}", highlight=False)
