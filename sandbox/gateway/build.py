"""Assemble a :class:`~sandbox.gateway.gateway.Gateway` from :class:`GatewaySettings`."""

from __future__ import annotations

from contextlib import ExitStack

import boto3
from botocore.config import Config
from kubernetes import client

from audit.client import AuditClient, AuditSink, AuditUnavailable, LocalAuditSink, TokenFile
from audit.errors import AuditError
from audit.log import KEY_FILE
from audit.signing import load_signer
from sandbox.errors import ConfigurationError
from sandbox.gateway.auth import TokenReviewer
from sandbox.gateway.authz import GrantResolver
from sandbox.gateway.gateway import Gateway
from sandbox.gateway.outbox import OutboxWriter
from sandbox.gateway.s3 import Storage
from sandbox.gateway.s3api import S3Surface
from sandbox.gateway.settings import GatewaySettings
from sandbox.gateway.sts import CredentialIssuer, load_server_keys
from sandbox.kube.clients import kube_client

__all__ = ["build_gateway", "outbox_writer", "s3_surface"]


def _audit(settings: GatewaySettings, stack: ExitStack) -> AuditSink:
    if settings.audit_url is not None:
        token = None
        if settings.audit_token_file is not None:
            # Re-read whenever it changes: a projected ServiceAccount token is replaced by
            # the kubelet before it expires. Checked once now, so a wrong path stops start-up.
            token = TokenFile(settings.audit_token_file)
            try:
                token.current()
            except AuditUnavailable as exc:
                raise ConfigurationError(str(exc)) from None
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


def outbox_writer(settings: GatewaySettings) -> OutboxWriter | None:
    """The outbox writer ``settings`` describe (the gateway's storage credentials), or None."""
    if settings.outbox_bucket is None:
        return None
    access, secret = settings.s3_access_key_id, settings.s3_secret_access_key
    s3 = boto3.session.Session().client(
        "s3",
        endpoint_url=settings.outbox_endpoint,
        region_name=settings.outbox_region,
        aws_access_key_id=access.get_secret_value() if access else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            max_pool_connections=settings.s3_max_connections,
            connect_timeout=settings.s3_timeout,
            read_timeout=settings.s3_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )
    return OutboxWriter(
        s3,
        settings.outbox_bucket,
        max_bytes=settings.outbox_max_bytes,
        part_bytes=settings.outbox_part_bytes,
    )


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
        outbox=outbox_writer(settings),
        outbox_max_writes=settings.outbox_max_writes,
    )


def s3_surface(settings: GatewaySettings, gateway: Gateway) -> S3Surface | None:
    """The S3 and STS surface of ``gateway`` if ``settings`` name STS server keys."""
    if settings.sts_key_file is None:
        return None
    keys = load_server_keys(settings.sts_key_file)
    return S3Surface(
        gateway,
        CredentialIssuer(keys, lifetime=settings.sts_lifetime_seconds),
        bind_source_address=settings.sts_bind_source_address,
    )
