"""Settings of the dataset gateway, read once at startup from ``REGSANDBOX_GATEWAY_*``.

Secrets (the S3 credentials, the audit token) are :class:`~pydantic.SecretStr` or files,
so they never appear in a repr, a log line or an error message.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sandbox.errors import ConfigurationError

__all__ = ["AUDIENCE", "GatewaySettings"]

AUDIENCE = "regsandbox-gateway"
"""The audience sandbox pods request for their projected ServiceAccount token."""


class GatewaySettings(BaseSettings):
    """Everything the gateway needs to know, grouped by concern."""

    model_config = SettingsConfigDict(
        env_prefix="REGSANDBOX_GATEWAY_", extra="forbid", use_attribute_docstrings=True
    )

    # -- Kubernetes -----------------------------------------------------------------------
    kubeconfig: Path | None = None
    """Kubeconfig of the gateway's identity; unset means the in-cluster ServiceAccount."""
    audience: str = AUDIENCE
    """Token audience the gateway accepts (checked by TokenReview)."""
    require_pod_binding: bool = True
    """Refuse tokens not bound to a Pod (so a token dies with its pod)."""
    review_cache_seconds: float = Field(default=10.0, ge=0, le=300)
    """How long a positive TokenReview is reused (never past the token's expiry); 0: off."""
    review_cache_size: int = Field(default=10_000, ge=1)
    """Most reviews cached at once."""
    grant_cache_seconds: float = Field(default=1.0, ge=0, le=30)
    """How long a sandbox/dataset lookup is reused; bounds how late a revocation bites."""
    kube_timeout: float = Field(default=5.0, gt=0)
    """Timeout of each API-server call, in seconds."""

    # -- audit log ------------------------------------------------------------------------
    audit_url: str | None = None
    """Base URL of ``sandboxctl audit serve``; exclusive with :attr:`audit_log_dir`."""
    audit_token_file: Path | None = None
    """File holding the gateway's writer token for the audit service."""
    audit_log_dir: Path | None = None
    """Log directory written in-process (single-replica and development setups)."""
    audit_signing_key: Path | None = None
    """Signing key of :attr:`audit_log_dir` (default: the log's own ``log.key``)."""
    audit_timeout: float = Field(default=5.0, gt=0)
    """Timeout of an append to the audit service, in seconds."""

    # -- storage --------------------------------------------------------------------------
    s3_access_key_id: SecretStr | None = None
    """Access key of the gateway's storage identity; unset: boto3's default chain."""
    s3_secret_access_key: SecretStr | None = None
    """Secret key matching :attr:`s3_access_key_id`."""
    s3_endpoints: list[str] = Field(default_factory=list)
    """S3 endpoint URLs the gateway may send its credentials to (JSON list in the
    environment). A Dataset without endpoint (AWS) is always allowed; one naming any
    other endpoint is refused with 403 ``EndpointNotAllowed`` before storage is asked."""
    s3_max_connections: int = Field(default=64, ge=1)
    """Connection pool size per S3 endpoint (bounds concurrent reads per endpoint)."""
    s3_timeout: float = Field(default=30.0, gt=0)
    """Connect and read timeout towards S3, in seconds."""
    chunk_bytes: int = Field(default=4 * 1024 * 1024, ge=4096, le=16 * 1024 * 1024)
    """Size of the chunks streamed to clients; memory per read is about twice this."""
    list_max_keys: int = Field(default=1000, ge=1, le=1000)
    """Most keys returned by one listing page."""

    # -- export outbox -------------------------------------------------------------------
    outbox_bucket: str | None = Field(default=None, min_length=3, max_length=63)
    """Bucket of the sandboxes' export outboxes: the operator's outbox bucket, where the
    airlock looks for ModelExport artifacts. Workloads write ``<sandbox id>/outbox/<path>``
    there with ``PUT /v1/outbox/<path>``, using the storage credentials above. Unset:
    writes are refused (503 ``OutboxNotConfigured``)."""
    outbox_endpoint: str | None = None
    """S3 endpoint URL of the outbox bucket (on-premise object store); unset means AWS."""
    outbox_region: str = "us-east-1"
    """S3 signing region of the outbox bucket."""
    outbox_max_bytes: int = Field(default=16 * 1024**3, ge=1)
    """Largest artifact a workload may write, in bytes; a larger body is refused with 413
    (before it is read when its Content-Length says so, else as soon as it passes this)."""
    outbox_part_bytes: int = Field(default=8 * 1024**2, ge=5 * 1024**2, le=512 * 1024**2)
    """Artifacts larger than this are stored as multipart uploads of parts this large
    (S3 allows 10,000 parts); memory per write is about this much."""
    outbox_max_writes: int = Field(default=8, ge=1, le=1024)
    """Most artifact writes one gateway replica holds at once (each buffers up to
    :attr:`outbox_part_bytes`); more are refused with 429 and ``Retry-After``, so
    uploads cannot exhaust the memory the gateway needs for everyone's reads."""

    # -- S3 surface (STS web identity) --------------------------------------------------
    sts_key_file: Path | None = None
    """File of the server keys sealing S3 session credentials (one base64 or hex key of
    at least 32 bytes per line; the first seals, all open), mounted by every replica from
    one Secret. Unset: the S3 and STS surface is off."""
    sts_lifetime_seconds: int = Field(default=3600, ge=900, le=43200)
    """Longest life of issued S3 credentials (also capped by the pod's token and the
    sandbox's expiry)."""
    sts_bind_source_address: bool = True
    """Accept S3 credentials only from the address (pod IP) they were issued to; turn off
    only behind a proxy that hides client addresses."""

    @model_validator(mode="after")
    def _one_audit_sink(self) -> GatewaySettings:
        if (self.audit_url is None) == (self.audit_log_dir is None):
            raise ValueError("set exactly one of audit_url or audit_log_dir")
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("set both s3_access_key_id and s3_secret_access_key, or neither")
        if self.outbox_max_bytes > 10_000 * self.outbox_part_bytes:
            raise ValueError(
                "outbox_max_bytes exceeds 10,000 parts of outbox_part_bytes; raise the part size"
            )
        return self

    @classmethod
    def load(cls, **overrides: object) -> GatewaySettings:
        """Read the settings from the environment; raise ConfigurationError if invalid."""
        from pydantic import ValidationError

        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors(include_input=False)
            )
            raise ConfigurationError(f"invalid gateway settings: {problems}") from None
