"""Operator settings, read once at start-up from flags or ``REGSANDBOX_*`` variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from operators.leader import LeaseSettings
from sandbox.api.accelerators import DEFAULT_ACCELERATORS, check_extended_resource
from sandbox.artifacts.outbox import OutboxSettings
from sandbox.policy.policyset import DEFAULT_POLICY_DIR
from sandbox.storage.profiles import LonghornProfile, StorageProfile

__all__ = ["OperatorSettings"]


class OperatorSettings(BaseSettings):
    """Everything the operator needs to know about its platform.

    Each field can be set as ``REGSANDBOX_<FIELD>`` (upper case), for example
    ``REGSANDBOX_CLUSTER_REGION=onprem:lu-national-1``; nested values are JSON.
    """

    model_config = SettingsConfigDict(
        env_prefix="REGSANDBOX_", extra="ignore", use_attribute_docstrings=True
    )

    kubeconfig: Path | None = None
    """Kubeconfig to use; unset means in-cluster configuration."""
    namespace: str = "regsandbox-system"
    """The operator's own namespace (key-encryption key and wrapped keys live here)."""
    cluster_region: str = Field(min_length=1)
    """Region-catalogue id of this cluster, e.g. ``onprem:lu-national-1`` (attested to policy)."""
    cluster_jurisdiction: str = Field(pattern=r"^[A-Z]{2}$")
    """ISO country of the cluster's region."""
    policy_engine: Literal["embedded", "opa"] = "embedded"
    """Which engine evaluates policies."""
    opa_url: str | None = None
    """OPA server URL when ``policy_engine`` is ``opa``."""
    opa_check_binary: Path | None = None
    """An ``opa`` binary the embedded engine compiles every policy set with before
    accepting it (regopy accepts some rules OPA refuses, e.g. unbound variables, which
    then never match). The image ships ``/usr/local/bin/opa``; the chart sets it."""
    policy_dir: Path = DEFAULT_POLICY_DIR
    """Directory of the built-in Rego policies and data."""
    audit_log_dir: Path | None = None
    """Local audit log directory (in-process writer); exclusive with ``audit_url``."""
    audit_signing_key: Path | None = None
    """Ed25519 signing key file for the local audit log."""
    audit_url: str | None = None
    """URL of the audit service."""
    audit_token_file: Path | None = None
    """File holding the bearer token for the audit service."""
    audit_retention_days: int = Field(default=3650, ge=1)
    """Days the platform keeps audit records (attested to policy)."""
    key_provider: Literal["local", "aws-kms", "pkcs11"] = "local"
    """Where per-sandbox keys are made (``pkcs11``: an HSM; see the ``pkcs11_*`` settings)."""
    local_kek_file: Path | None = None
    """With ``local``: a file holding the KEK (base64), mounted from outside the cluster
    (a CSI secrets-store volume from Vault or an HSM-backed store, a sealed host disk).
    Unset, the KEK is kept in the Secret ``regsandbox-kek`` beside the wrapped keys it
    protects — convenient, but etcd then holds both (docs/key-custody.md)."""
    local_previous_kek_file: Path | None = None
    """With ``local_kek_file``: a file holding the previous KEK during a rotation (read
    again as it changes; absent or empty means none). Keys wrapped under it still
    unwrap; ``sandbox-operator keys rotate-kek`` rewraps them under the current KEK, and
    then it can be emptied (docs/key-custody.md, "Rotating the KEK")."""
    pkcs11_module: Path | None = None
    """The HSM vendor's PKCS#11 library, e.g. ``/usr/lib/softhsm/libsofthsm2.so``."""
    pkcs11_token_label: str | None = Field(default=None, min_length=1, max_length=32)
    """Label of the token holding the sandbox keys."""
    pkcs11_pin_file: Path | None = None
    """File holding the token's user PIN (the chart mounts it from a Secret)."""
    kms_endpoint_url: str | None = None
    """KMS endpoint override (sovereign clouds, tests)."""
    kms_regions: list[str] = Field(default_factory=list)
    """AWS regions keys may live in (default: the cluster's region without its provider prefix)."""
    kms_pending_window_days: int = Field(default=7, ge=7, le=30)
    """Days between ScheduleKeyDeletion and the key being gone."""
    storage_profile: StorageProfile = Field(default_factory=LonghornProfile)
    """How encrypted volumes are requested from the CSI driver."""
    export_outbox: OutboxSettings | None = None
    """Where sandboxes leave artifacts for export and where they may go (JSON); unset
    means no export is ever released."""
    export_resync_seconds: float = Field(default=10.0, gt=0)
    """How often each ModelExport is moved along (policy, reviews, release)."""
    gateway_namespace: str = "regsandbox-system"
    """Namespace of the dataset gateway (sandboxes may reach it)."""
    gateway_port: int = Field(default=8443, ge=1, le=65535)
    """Port the dataset gateway's pods listen on (sandbox NetworkPolicies allow it)."""
    gateway_url: str | None = Field(default=None, pattern=r"^https?://[^\s/?#]+/?$")
    """The gateway's in-cluster URL (e.g. ``http://regsandbox-gateway.regsandbox-system.svc:8443``);
    when set, every sandbox namespace gets the ``regsandbox-s3`` ConfigMap of AWS SDK
    variables that pods take with ``envFrom`` (the chart sets it when the S3 surface is on)."""
    gateway_s3_region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,32}$")
    """Region S3 clients in sandboxes sign for (the gateway accepts any)."""
    gateway_sts_key_secret: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{0,252}$")
    """Secret in ``namespace`` holding the gateway's STS sealing keys: created once, with a
    random key, when absent (the chart sets it unless the user supplies the Secret)."""
    accelerator_resources: list[Annotated[str, AfterValidator(check_extended_resource)]] = Field(
        default_factory=lambda: list(DEFAULT_ACCELERATORS)
    )
    """Extended resources the platform offers (JSON list, e.g. ``["nvidia.com/gpu",
    "nvidia.com/mig-3g.40gb"]``). Each sandbox's quota limits every one of them, to 0
    unless the sandbox asks for it; a sandbox asking for another is refused. List every
    accelerator your nodes' device plugins advertise: a quota does not limit a resource
    it does not name."""
    resync_seconds: float = Field(default=30.0, gt=0)
    """How often each sandbox is checked for drift and expiry."""
    workers: int = Field(default=16, ge=1, le=128)
    """Handlers run at once (threads); API calls dominate, so more than the cores."""
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    """Prometheus metrics port on 127.0.0.1 (0 disables)."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics server binds."""
    log_level: str = "INFO"
    """Log level for the operator and kopf."""
    actor: str = "system:serviceaccount:regsandbox-system:regsandbox-operator"
    """Identity recorded in audit entries for the operator's own actions."""
    leader_election: bool = False
    """Act only while holding the Lease ``leader_election_lease`` in ``namespace``, so
    several replicas can run and one takes over when the leader dies (the chart sets it;
    see :mod:`operators.leader` for why a Lease and not kopf's peering)."""
    leader_election_lease: str = "regsandbox-operator"
    """Name of the leader-election Lease."""
    leader_election_identity: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", min_length=1
    )
    """This replica's name in the Lease (the chart sets the pod name)."""
    leader_election_lease_seconds: int = Field(default=15, ge=2, le=300)
    """Seconds a standby waits after the leader's last renewal before taking over: the
    failover time after a crash, give or take one retry."""
    leader_election_renew_deadline_seconds: float = Field(default=10.0, gt=0)
    """A leader that could not renew for this long stops (shorter than the lease)."""
    leader_election_retry_seconds: float = Field(default=2.0, gt=0)
    """Interval between renewals, and between a standby's attempts."""

    @model_validator(mode="after")
    def _election_timing(self) -> OperatorSettings:
        """Refuse election timings under which two leaders could overlap."""
        if self.leader_election:
            self.lease_settings()
        return self

    def lease_settings(self) -> LeaseSettings:
        """The leader-election settings (raises ValueError on inconsistent timings)."""
        return LeaseSettings(
            namespace=self.namespace,
            name=self.leader_election_lease,
            identity=self.leader_election_identity,
            lease_seconds=self.leader_election_lease_seconds,
            renew_deadline_seconds=self.leader_election_renew_deadline_seconds,
            retry_seconds=self.leader_election_retry_seconds,
        )

    @model_validator(mode="after")
    def _keys_fit_storage(self) -> OperatorSettings:
        """Refuse at start-up a key provider the storage profile cannot use."""
        if self.key_provider == "aws-kms" and self.storage_profile.kind == "longhorn":
            raise ValueError(
                "the longhorn storage profile encrypts volumes with a data key from the local "
                "key provider; with key_provider aws-kms use the aws-ebs storage profile"
            )
        if self.local_kek_file is not None and self.key_provider != "local":
            raise ValueError(
                f"local_kek_file (REGSANDBOX_LOCAL_KEK_FILE) is the local provider's KEK; "
                f"key_provider is {self.key_provider}"
            )
        if self.local_previous_kek_file is not None and self.local_kek_file is None:
            raise ValueError(
                "local_previous_kek_file (REGSANDBOX_LOCAL_PREVIOUS_KEK_FILE) needs "
                "local_kek_file: with the KEK in a Secret, the previous KEKs are Secrets too"
            )
        if self.key_provider == "pkcs11" and not (
            self.pkcs11_module and self.pkcs11_token_label and self.pkcs11_pin_file
        ):
            raise ValueError(
                "key_provider pkcs11 needs pkcs11_module, pkcs11_token_label and "
                "pkcs11_pin_file (REGSANDBOX_PKCS11_*)"
            )
        if self.key_provider == "pkcs11" and self.storage_profile.kind == "aws-ebs":
            raise ValueError(
                "the aws-ebs storage profile encrypts volumes with the sandbox's KMS key; "
                "set key_provider to aws-kms"
            )
        if self.key_provider == "local" and self.storage_profile.kind == "aws-ebs":
            raise ValueError(
                "the aws-ebs storage profile encrypts volumes with the sandbox's KMS key; "
                "set key_provider to aws-kms"
            )
        return self
