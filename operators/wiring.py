"""Build the :class:`~sandbox.lifecycle.Platform` from the operator's settings."""

from __future__ import annotations

from kubernetes import client, config

from audit.client import AuditClient, AuditSink, LocalAuditSink, TokenFile
from audit.entry import Actor
from audit.signing import load_signer
from operators.gateway_keys import ensure_sts_key_secret
from operators.metrics import DECISION_SECONDS
from operators.settings import OperatorSettings
from sandbox.api.meta import provider_region
from sandbox.errors import ConfigurationError
from sandbox.keys.base import KeyProvider
from sandbox.keys.kek_ring import FileKekRing, KekSource, SecretKekRing
from sandbox.keys.local import LocalKeyProvider
from sandbox.keys.secret_store import SecretWrappedKeyStore
from sandbox.kube.cache import WatchedObjects
from sandbox.kube.versions import VersionIndex
from sandbox.lifecycle.platform import Platform
from sandbox.policy.embedded import EmbeddedEngine
from sandbox.policy.engine import PolicyEngine
from sandbox.policy.opa import OpaEngine
from sandbox.policy.policyset import PolicySet
from sandbox.provision.sandbox_plan import IsolationSettings

__all__ = ["api_client", "audit_sink", "build_platform", "key_provider"]


def api_client(settings: OperatorSettings) -> client.ApiClient:
    """The operator's own API client: kubeconfig if set, else in-cluster."""
    if settings.kubeconfig:
        api = config.new_client_from_config(config_file=str(settings.kubeconfig))
    else:
        config.load_incluster_config()
        api = client.ApiClient()
    # One pooled connection per handler thread, so threads do not queue for sockets.
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = settings.workers
    return api


def _engine(settings: OperatorSettings) -> tuple[PolicyEngine, PolicySet]:
    """The engine, and the policy set it must hold (loaded on first use if it is down)."""
    policies = PolicySet.from_directory(settings.policy_dir)
    if settings.policy_engine == "opa":
        if not settings.opa_url:
            raise ConfigurationError("policy_engine=opa needs REGSANDBOX_OPA_URL")
        return OpaEngine(settings.opa_url), policies
    return EmbeddedEngine(opa_check=settings.opa_check_binary), policies


def audit_sink(settings: OperatorSettings) -> AuditSink:
    """The audit sink the settings select."""
    if settings.audit_url:
        # Re-read whenever it changes (projected ServiceAccount tokens are rotated).
        token = TokenFile(settings.audit_token_file) if settings.audit_token_file else None
        return AuditClient(settings.audit_url, token)
    if settings.audit_log_dir and settings.audit_signing_key:
        return LocalAuditSink(settings.audit_log_dir, load_signer(settings.audit_signing_key))
    raise ConfigurationError(
        "no audit sink: set REGSANDBOX_AUDIT_URL, or REGSANDBOX_AUDIT_LOG_DIR with "
        "REGSANDBOX_AUDIT_SIGNING_KEY"
    )


def key_provider(
    settings: OperatorSettings, api: client.ApiClient, versions: VersionIndex | None = None
) -> KeyProvider:
    """The key provider the settings select (the operator's, and ``keys`` commands').

    The aws-kms and pkcs11 providers are imported only when selected: boto3 is not
    loaded into an operator that does not use it. ``versions`` (the operator's index)
    lets wrapped keys be reused while their Secrets are unchanged.
    """
    if settings.key_provider == "aws-kms":
        from sandbox.keys.kms import AwsKmsKeyProvider, AwsKmsSettings

        return AwsKmsKeyProvider(
            AwsKmsSettings(
                regions=tuple(settings.kms_regions) or (provider_region(settings.cluster_region),),
                endpoint_url=settings.kms_endpoint_url,
                pending_window_days=settings.kms_pending_window_days,
            )
        )
    store = SecretWrappedKeyStore(api, settings.namespace, versions=versions)
    if settings.key_provider == "pkcs11":
        from sandbox.keys.pkcs11 import Pkcs11KeyProvider, Pkcs11Settings, read_pin_file

        # The token is first reached on the first key call, so the operator starts while
        # the HSM is down and provisioning fails closed (KeyProviderUnavailable).
        module, label, pin_file = (
            settings.pkcs11_module,
            settings.pkcs11_token_label,
            settings.pkcs11_pin_file,
        )
        if module is None or label is None or pin_file is None:
            raise ConfigurationError(
                "key_provider pkcs11 needs REGSANDBOX_PKCS11_MODULE, "
                "REGSANDBOX_PKCS11_TOKEN_LABEL and REGSANDBOX_PKCS11_PIN_FILE"
            )
        hsm = Pkcs11Settings(module=module, token_label=label, pin=read_pin_file(pin_file))
        return Pkcs11KeyProvider(hsm, store, lock_stripes=4 * settings.workers)
    source: KekSource
    if settings.local_kek_file is not None:  # outside the cluster it protects
        source = FileKekRing(settings.local_kek_file, settings.local_previous_kek_file)
    else:
        source = SecretKekRing(api, settings.namespace)
    # Per-sandbox lock stripes: new sandboxes do not queue behind each other's API calls.
    return LocalKeyProvider.from_source(source, store, lock_stripes=4 * settings.workers)


def build_platform(settings: OperatorSettings) -> Platform:
    """Connect to the API server, load policies, open the audit sink, set up keys."""
    api = api_client(settings)
    engine, policies = _engine(settings)
    # Secrets are listed at most three times per drift interval (10 s at most apart): an
    # edited Secret is put back within one interval and that much.
    list_fresh_for = max(1.0, min(10.0, settings.resync_seconds / 3))
    versions = VersionIndex(api, list_fresh_for=list_fresh_for).start()
    platform = Platform(
        api=api,
        engine=engine,
        policies=policies,
        base_policies=policies,
        audit=audit_sink(settings),
        keys=key_provider(settings, api, versions),
        storage=settings.storage_profile,
        cluster_region=settings.cluster_region,
        cluster_jurisdiction=settings.cluster_jurisdiction,
        audit_retention_days=settings.audit_retention_days,
        isolation=IsolationSettings(
            gateway_namespace=settings.gateway_namespace,
            gateway_port=settings.gateway_port,
            gateway_url=settings.gateway_url,
            gateway_s3_region=settings.gateway_s3_region,
            accelerators=tuple(dict.fromkeys(settings.accelerator_resources)),
        ),
        actor=Actor(user=settings.actor),
        on_decision=lambda action, seconds: DECISION_SECONDS.labels(action).observe(seconds),
        watched={kind: WatchedObjects(kind) for kind in ("Tenant", "Dataset")},
        versions=versions,
    )
    platform.ensure_policies()
    if settings.gateway_sts_key_secret is not None:
        ensure_sts_key_secret(api, settings.namespace, settings.gateway_sts_key_secret)
    return platform
