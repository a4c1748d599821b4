"""``sandboxctl audit … --server URL``: read and verify the audit log through its service.

A compliance officer needs no ``exec`` into the cluster and no copy of the log volume:
the commands ``log``, ``show``, ``verify``, ``prove`` and ``consistency`` take
``--server`` and read through the audit service's API (:class:`audit.remote.RemoteLog`),
as the whole log or, with ``--tenant``, one tenant's slice.

The bearer token is the caller's: ``--token-file``, else the token the kubeconfig's
current (or ``--context``) user carries, including one from an exec credential plugin.
The service accepts only tokens for its audience (``regsandbox-audit`` by default), e.g.
``kubectl create token bank-auditor --audience regsandbox-audit``. If the kubeconfig's
user has a client certificate, it is presented too: an audit service that terminates TLS
with the cluster's client CA (``audit serve --client-ca-file``) accepts it as that user
(CN) and groups (O), so a certificate user needs no token. Every checkpoint is checked
with ``--vkey``, the verifier key the platform publishes — never with a key the service
would hand out.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import httpx
import typer

from audit.client import AuditRejected, AuditUnavailable
from audit.note import Verifier
from audit.remote import RemoteLog
from sandbox.cli.output import EXIT_USAGE, fail

if TYPE_CHECKING:
    from kubernetes import client

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
    from_kube = _kube_token(_kube_user(kubeconfig, context))
    if from_kube is None:
        fail(
            "the kubeconfig user carries no bearer token; pass --token-file with a token "
            "for the audit service's audience, e.g. kubectl create token NAME --audience "
            "regsandbox-audit",
            EXIT_USAGE,
        )
    return from_kube


def _kube_user(kubeconfig: Path | None, context: str | None) -> client.Configuration:
    """The kubeconfig's current (or ``context``) user, as the kubernetes client reads it."""
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
    return cfg


def _kube_token(cfg: client.Configuration) -> str | None:
    scheme, _, token = str(cfg.api_key.get("authorization", "")).partition(" ")
    return token if scheme.lower() == "bearer" and token else None


def _tls_context(ca_file: Path | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """Trust ``ca_file`` (else the system's roots) and present ``cert`` if given."""
    try:
        ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if cert and key:
            ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        fail(f"cannot load the TLS files: {exc}")
    return ctx


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
    """A :class:`RemoteLog` at ``server`` read with the caller's token, or the client
    certificate of the kubeconfig's user (over https, sent along with any token)."""
    if not server.startswith(("https://", "http://")):
        fail(f"--server {server!r}: want an http(s):// URL", EXIT_USAGE)
    if token_file is not None:
        token = bearer_token(token_file, kubeconfig, context)
        return RemoteLog(server, token, verifiers, tenant=tenant, verify_tls=_verify(ca_file))
    user = _kube_user(kubeconfig, context)
    cert, key = user.cert_file, user.key_file
    if not (cert and key and server.startswith("https://")):
        token = bearer_token(None, kubeconfig, context)  # or fail, saying what to do
        return RemoteLog(server, token, verifiers, tenant=tenant, verify_tls=_verify(ca_file))
    transport = httpx.HTTPTransport(verify=_tls_context(ca_file, cert, key))
    return RemoteLog(server, _kube_token(user), verifiers, tenant=tenant, transport=transport)


def _verify(ca_file: Path | None) -> str | bool:
    return str(ca_file) if ca_file is not None else True


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
