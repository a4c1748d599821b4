"""Issue 20: the operator gives every sandbox the S3 client environment, and the
gateway's STS sealing key, without the chart rendering any secret.

A real operator process under the chart's RBAC, on the session control plane.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sandbox.gateway.sts import load_server_keys
from sandbox.kube.apply import delete, get

from .helpers import SYSTEM_NS, ready_sandbox, unique

pytestmark = pytest.mark.integration

GATEWAY_URL = "http://regsandbox-gateway.regsandbox-system.svc:8443"


def _key_file(secret: dict[str, Any], tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_bytes(base64.b64decode(secret["data"]["keys"]))
    return path


def test_every_sandbox_gets_the_aws_sdk_environment_and_keeps_it(
    admin_api: client.ApiClient,
    swap_operator: Callable[..., Any],
    tenant_factory: Callable[..., str],
    tmp_path: Path,
) -> None:
    secret_name = unique("rs-gateway-sts")
    env = {
        "REGSANDBOX_GATEWAY_URL": GATEWAY_URL,
        "REGSANDBOX_GATEWAY_S3_REGION": "eu-central-1",
        "REGSANDBOX_GATEWAY_STS_KEY_SECRET": secret_name,
    }
    operator = swap_operator(**env)
    try:
        # The STS key: made once, by the operator, loadable by the gateway.
        secret = operator.wait_until(
            lambda: get(admin_api, "Secret", secret_name, SYSTEM_NS), 30, "the STS key Secret"
        )
        keys = load_server_keys(_key_file(secret, tmp_path))
        assert len(keys) == 1
        assert len(keys[0]) == 32
        # A restart (or a second replica) keeps the key: sessions stay valid.
        operator.stop()
        operator = swap_operator(**env)
        tenant = tenant_factory()
        _, ns = ready_sandbox(admin_api, operator, tenant)
        again = get(admin_api, "Secret", secret_name, SYSTEM_NS)
        assert again is not None
        assert again["data"] == secret["data"]

        cm = get(admin_api, "ConfigMap", "regsandbox-s3", ns)
        assert cm is not None
        assert cm["data"] == {
            "AWS_ENDPOINT_URL": GATEWAY_URL,
            "AWS_ENDPOINT_URL_S3": GATEWAY_URL,
            "AWS_ENDPOINT_URL_STS": GATEWAY_URL,
            "AWS_ROLE_ARN": "arn:aws:iam::000000000000:role/regsandbox-workload",
            "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/regsandbox/token",
            "AWS_REGION": "eu-central-1",
            "AWS_DEFAULT_REGION": "eu-central-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        # No credential of any kind is in it.
        assert not any("KEY" in name or "SECRET" in name for name in cm["data"])

        # Someone points the SDKs elsewhere: the drift check puts the gateway back.
        edited = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "regsandbox-s3", "namespace": ns},
            "data": {"AWS_ENDPOINT_URL_STS": "http://collector.example:80"},
        }
        client.CoreV1Api(admin_api).patch_namespaced_config_map("regsandbox-s3", ns, edited)

        def restored() -> bool:
            live = get(admin_api, "ConfigMap", "regsandbox-s3", ns)
            return bool(live and live["data"]["AWS_ENDPOINT_URL_STS"] == GATEWAY_URL)

        operator.wait_until(restored, 30, "the edited ConfigMap to be restored")
        delete(admin_api, "ConfigMap", "regsandbox-s3", ns)
        operator.wait_until(
            lambda: get(admin_api, "ConfigMap", "regsandbox-s3", ns), 30, "it to be recreated"
        )
    finally:
        delete(admin_api, "Secret", secret_name, SYSTEM_NS)


def test_without_a_gateway_url_no_configmap_is_written(
    admin_api: client.ApiClient, operator: Any, tenant_factory: Callable[..., str]
) -> None:
    _, ns = ready_sandbox(admin_api, operator, tenant_factory())
    assert get(admin_api, "ConfigMap", "regsandbox-s3", ns) is None
