"""``sandboxctl audit … --server URL``: read and verify the audit log through its service.

A compliance officer needs no ``exec`` into the cluster and no copy of the log volume:
the commands ``log``, ``show``, ``verify``, ``prove`` and ``consistency`` take
``--server`` and read through the audit service's API (:class:`audit.remote.RemoteLog`),
as the whole log or, with ``--tenant``, one tenant's slice.

The bearer token is the caller's: ``--token-file``, else the token the kubeconfig's
current (or ``--context``) user carries, including one from an exec credential plugin.
The service accepts only tokens for its audience (``regsandbox-audit`` by default), e.g.
``kubectl create token bank-auditor --audience regsandbox-audit``. Client certificates
are not sent. Every checkpoint is checked with ``--vkey``, the verifier key the platform
publishes — never with a key the service would hand out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from audit.client import AuditRejected, AuditUnavailable
from audit.note import Verifier
from audit.remote import RemoteLog
from sandbox.cli.output import EXIT_USAGE, fail

__all__ = [
    "CaFileOpt",
    "ContextOpt",
    "KubeconfigOpt",
    "ServerOpt",
    "TokenFileOpt",
    "bearer_token",
    "open_remote",
    "unavailable",
]

ServerOpt = Annotated[
    str | None,
    typer.Option(
        "--server",
        help="Audit service URL, e.g. https://audit.example; read through it instead of --log.",
    ),
]
TokenFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="File holding the bearer token (default: the kubeconfig user's token).",
    ),
]
KubeconfigOpt = Annotated[
    Path | None, typer.Option("--kubeconfig", help="Kubeconfig for the caller's token.")
]
ContextOpt = Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")]
CaFileOpt = Annotated[
    Path | None, typer.Option("--ca-file", help="CA bundle trusted for the service's TLS.")
]


def bearer_token(token_file: Path | None, kubeconfig: Path | None, context: str | None) -> str:
    """The caller's bearer token, from ``token_file`` or the kubeconfig's user."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            fail(f"cannot read --token-file {token_file}: {exc.strerror}")
        if not token:
            fail(f"--token-file {token_file} is empty")
        return token
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_kube_config(
            config_file=str(kubeconfig) if kubeconfig else None,
            context=context,
            client_configuration=cfg,
        )
    except (config.ConfigException, OSError) as exc:
        fail(f"cannot read the kubeconfig: {exc}")
    scheme, _, token = str(cfg.api_key.get("authorization", "")).partition(" ")
    if scheme.lower() != "bearer" or not token:
        fail(
            "the kubeconfig user carries no bearer token (a client certificate is not "
            "accepted by the audit service); pass --token-file with a token for its "
            "audience, e.g. kubectl create token NAME --audience regsandbox-audit",
            EXIT_USAGE,
        )
    return token


def open_remote(
    server: str,
    verifiers: list[Verifier],
    *,
    tenant: str | None,
    token_file: Path | None,
    kubeconfig: Path | None,
    context: str | None,
    ca_file: Path | None,
) -> RemoteLog:
    """A :class:`RemoteLog` at ``server`` read with the caller's token."""
    if not server.startswith(("https://", "http://")):
        fail(f"--server {server!r}: want an http(s):// URL", EXIT_USAGE)
    token = bearer_token(token_file, kubeconfig, context)
    verify: str | bool = str(ca_file) if ca_file is not None else True
    return RemoteLog(server, token, verifiers, tenant=tenant, verify_tls=verify)


def unavailable(exc: AuditUnavailable) -> NoReturn:
    """Fail with the service's answer: 401/403 say how to get access."""
    if isinstance(exc, AuditRejected) or " 401" in str(exc) or " 403" in str(exc):
        hint = ""
        if " 401" in str(exc):
            hint = " (is the token for the audit service's audience and still valid?)"
        elif " 403" in str(exc):
            hint = " (ask for the regsandbox-tenant-auditor or -platform-auditor role)"
        fail(f"{exc}{hint}")
    fail(str(exc))
