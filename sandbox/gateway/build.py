"""Assemble a :class:`~sandbox.gateway.app.Gateway` from :class:`GatewaySettings`."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from kubernetes import client, config

from audit.client import AuditClient, AuditSink, AuditUnavailable, LocalAuditSink
from audit.errors import AuditError
from audit.log import KEY_FILE
from audit.signing import load_signer
from sandbox.errors import ConfigurationError
from sandbox.gateway.app import Gateway
from sandbox.gateway.auth import TokenReviewer
from sandbox.gateway.authz import GrantResolver
from sandbox.gateway.settings import GatewaySettings
from sandbox.gateway.storage import Storage

__all__ = ["build_gateway", "kube_client"]


def kube_client(kubeconfig: Path | None) -> client.ApiClient:
    """An ApiClient from ``kubeconfig``, or from the in-cluster ServiceAccount if None."""
    try:
        if kubeconfig is None:
            cfg = client.Configuration()
            config.load_incluster_config(client_configuration=cfg)
            return client.ApiClient(cfg)
        api: client.ApiClient = config.new_client_from_config(config_file=str(kubeconfig))
        return api
    except config.ConfigException as exc:
        raise ConfigurationError(f"cannot configure the Kubernetes client: {exc}") from None


def _audit(settings: GatewaySettings, stack: ExitStack) -> AuditSink:
    if settings.audit_url is not None:
        token = None
        if settings.audit_token_file is not None:
            try:
                token = settings.audit_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read audit token file {settings.audit_token_file}: {exc.strerror}"
                ) from None
        return stack.enter_context(
            AuditClient(settings.audit_url, token, timeout=settings.audit_timeout)
        )
    assert settings.audit_log_dir is not None  # the settings validator guarantees one
    key = settings.audit_signing_key or settings.audit_log_dir / KEY_FILE
    try:
        signer = load_signer(key)
        return stack.enter_context(LocalAuditSink(settings.audit_log_dir, signer))
    except (AuditError, AuditUnavailable, OSError) as exc:
        raise ConfigurationError(f"cannot open the audit log: {exc}") from None


def build_gateway(
    settings: GatewaySettings, stack: ExitStack, *, api: client.ApiClient | None = None
) -> Gateway:
    """A gateway wired as ``settings`` say; resources to close are pushed on ``stack``."""
    api = api or kube_client(settings.kubeconfig)
    stack.callback(api.close)
    grants = GrantResolver(
        api, cache_seconds=settings.grant_cache_seconds, timeout=settings.kube_timeout
    )
    stack.callback(grants.close)
    return Gateway(
        reviewer=TokenReviewer(
            api,
            settings.audience,
            cache_seconds=settings.review_cache_seconds,
            cache_size=settings.review_cache_size,
            timeout=settings.kube_timeout,
            require_pod_binding=settings.require_pod_binding,
        ),
        grants=grants,
        storage=Storage(
            settings.s3_access_key_id,
            settings.s3_secret_access_key,
            max_connections=settings.s3_max_connections,
            timeout=settings.s3_timeout,
            allowed_endpoints=settings.s3_endpoints,
        ),
        audit=_audit(settings, stack),
        chunk_bytes=settings.chunk_bytes,
        list_max_keys=settings.list_max_keys,
    )
