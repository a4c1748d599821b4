"""The gateway's STS sealing key: created once by the operator, never by the chart.

Helm templates must render the same bytes every time (GitOps tools diff them), so the
chart cannot generate a key; it names a Secret the gateways mount, and the operator
creates that Secret, with a random 256-bit key, the first time it starts without it.
An existing Secret (the operator's from an earlier start, or one the user supplied with
their own keys) is never changed.
"""

from __future__ import annotations

import secrets

from kubernetes import client
from kubernetes.client.rest import ApiException

from sandbox.kube.apply import create, get
from sandbox.provision.s3_client_env import sts_key_secret

__all__ = ["ensure_sts_key_secret"]

_KEY_BYTES = 32


def ensure_sts_key_secret(api: client.ApiClient, namespace: str, name: str) -> bool:
    """Create Secret ``name`` in ``namespace`` with a new random key unless it exists.

    Race-safe between operator replicas (the second create gets 409 and keeps the
    first's key). Returns whether this call created it.
    """
    if get(api, "Secret", name, namespace) is not None:
        return False
    try:
        create(api, sts_key_secret(name, namespace, secrets.token_bytes(_KEY_BYTES)))
    except ApiException as exc:
        if exc.status != 409:
            raise
        return False
    return True
