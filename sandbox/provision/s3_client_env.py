"""The S3 client environment of a sandbox: one ConfigMap a pod takes with ``envFrom``.

AWS SDKs (boto3, s3fs/aiobotocore, the AWS CLI, the Java and Go SDKs) find the dataset
gateway and exchange the pod's projected ServiceAccount token for short-lived S3
credentials by themselves when these variables are set, so a workload reads its
granted datasets and writes into its outbox without code of its own:

.. code-block:: yaml

    envFrom: [{configMapRef: {name: regsandbox-s3}}]
    volumeMounts: [{name: gateway-token, mountPath: /var/run/regsandbox}]
    volumes:
      - name: gateway-token
        projected:
          sources:
            - serviceAccountToken: {audience: regsandbox-gateway, path: token,
                                    expirationSeconds: 3600}

The ConfigMap holds no secret: the credentials come from the token, which only the
pod's own volume holds. The role ARN is required by the SDKs and ignored by the gateway
(who the pod is comes from the token).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from sandbox.provision.names import managed_labels

__all__ = [
    "S3_CLIENT_CONFIGMAP",
    "STS_KEY_SECRET_KEY",
    "TOKEN_AUDIENCE",
    "TOKEN_FILE",
    "WORKLOAD_ROLE_ARN",
    "S3ClientSettings",
    "s3_client_configmap",
    "s3_client_environment",
    "sts_key_secret",
]

S3_CLIENT_CONFIGMAP = "regsandbox-s3"
"""Name of the ConfigMap in every sandbox namespace."""
TOKEN_AUDIENCE = "regsandbox-gateway"  # noqa: S105 - an audience, not a secret
"""Audience of the projected token the gateway accepts."""
TOKEN_FILE = "/var/run/regsandbox/token"  # noqa: S105 - a path
"""Where the documented pod template mounts the projected token."""
WORKLOAD_ROLE_ARN = "arn:aws:iam::000000000000:role/regsandbox-workload"
"""The role ARN the SDKs require (the gateway does not use it)."""
STS_KEY_SECRET_KEY = "keys"  # noqa: S105 - a key name
"""Key, in the STS key Secret, of the file of server keys (one base64 key per line)."""


@dataclass(frozen=True)
class S3ClientSettings:
    """Where a sandbox's pods reach the gateway's S3 and STS surface."""

    endpoint_url: str
    """The gateway's in-cluster URL, e.g. ``http://regsandbox-gateway.regsandbox-system.svc:8443``."""
    region: str = "us-east-1"
    """Signing region the SDKs use (any region is accepted; it only has to be set)."""


def s3_client_environment(settings: S3ClientSettings) -> dict[str, str]:
    """The environment variables a pod needs to use the gateway through AWS SDKs."""
    url = settings.endpoint_url.rstrip("/")
    return {
        "AWS_ENDPOINT_URL": url,
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ENDPOINT_URL_STS": url,
        "AWS_ROLE_ARN": WORKLOAD_ROLE_ARN,
        "AWS_WEB_IDENTITY_TOKEN_FILE": TOKEN_FILE,
        "AWS_REGION": settings.region,
        "AWS_DEFAULT_REGION": settings.region,
        # No instance metadata inside a sandbox: SDKs must not wait on 169.254.169.254.
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_client_configmap(
    namespace: str, settings: S3ClientSettings, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ``regsandbox-s3`` ConfigMap of the sandbox namespace ``namespace``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": S3_CLIENT_CONFIGMAP,
            "namespace": namespace,
            "labels": labels or managed_labels(),
            "annotations": {
                "regsandbox.io/usage": (
                    "envFrom this ConfigMap and mount a projected ServiceAccount token "
                    f"(audience {TOKEN_AUDIENCE}) at {TOKEN_FILE}"
                ),
            },
        },
        "data": s3_client_environment(settings),
    }


def sts_key_secret(name: str, namespace: str, key: bytes) -> dict[str, Any]:
    """The Secret of the gateway's STS sealing key ``key`` (32 bytes or more).

    Not immutable: to rotate, put a new key on the first line, keep the old one below it
    for an hour (credentials live at most that long), and restart the gateways."""
    if len(key) < 32:
        raise ValueError("an STS key has at least 32 bytes")
    line = base64.b64encode(key).decode() + "\n"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": managed_labels(key="gateway-sts"),
        },
        "type": "Opaque",
        "data": {STS_KEY_SECRET_KEY: base64.b64encode(line.encode()).decode()},
    }
