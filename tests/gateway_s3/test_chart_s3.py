"""Issue 20, chart: the gateways mount the STS key Secret; nothing secret is rendered.

GitOps tools (Argo CD, Flux) render the chart and diff the result, so the manifests
must be the same bytes on every render and hold no generated key: the Secret is the
user's, or the one the operator creates once (tests/lifecycle/test_s3_client_env.py).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from operators.settings import OperatorSettings
from sandbox.devenv.toolchain import tool_path

pytestmark = pytest.mark.integration


def _render(chart: Path, *assignments: str) -> str:
    args = [arg for assignment in assignments for arg in ("--set", assignment)]
    done = subprocess.run(
        [str(tool_path("helm")), "template", "rs", str(chart), "-n", "rsb", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def _docs(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def _container(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    pod = next(
        d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    return {"pod": pod, **next(c for c in pod["containers"] if c["name"] == component)}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.fixture(scope="module")
def chart(repo_root: Path) -> Path:
    return repo_root / "charts/regsandbox"


def test_gateways_mount_the_operators_sts_key_secret_and_render_the_same_bytes(
    chart: Path,
) -> None:
    first = _render(chart)
    assert _render(chart) == first
    docs = _docs(first)
    assert "Secret" not in {d["kind"] for d in docs}
    gateway = _container(docs, "gateway")
    assert _env(gateway)["REGSANDBOX_GATEWAY_STS_KEY_FILE"] == "/var/run/regsandbox/sts/keys"
    mount = next(m for m in gateway["volumeMounts"] if m["name"] == "sts-keys")
    assert mount == {"name": "sts-keys", "mountPath": "/var/run/regsandbox/sts", "readOnly": True}
    volume = next(v for v in gateway["pod"]["volumes"] if v["name"] == "sts-keys")
    assert volume["secret"]["secretName"] == "rs-gateway-sts"
    operator = _env(_container(docs, "operator"))
    # The operator creates exactly the Secret the gateways mount, and writes the
    # ConfigMaps with the gateway Service's in-cluster URL.
    assert operator["REGSANDBOX_GATEWAY_STS_KEY_SECRET"] == "rs-gateway-sts"
    assert operator["REGSANDBOX_GATEWAY_URL"] == "http://rs-gateway.rsb.svc:8443"
    service = next(
        d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "rs-gateway"
    )
    assert service["metadata"]["namespace"] == "rsb"
    assert service["spec"]["ports"][0]["port"] == 8443
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("REGSANDBOX_"):
                patch.delenv(name)
        for name, value in operator.items():
            patch.setenv(name, value)
        settings = OperatorSettings()  # type: ignore[call-arg]
    assert settings.gateway_url == "http://rs-gateway.rsb.svc:8443"
    assert settings.gateway_sts_key_secret == "rs-gateway-sts"
    assert settings.gateway_s3_region == "us-east-1"


def test_a_user_supplied_key_secret_is_mounted_and_the_operator_makes_none(chart: Path) -> None:
    docs = _docs(_render(chart, "gateway.s3.stsKeySecret=my-sts-keys", "gateway.port=9000"))
    gateway = _container(docs, "gateway")
    volume = next(v for v in gateway["pod"]["volumes"] if v["name"] == "sts-keys")
    assert volume["secret"]["secretName"] == "my-sts-keys"
    operator = _env(_container(docs, "operator"))
    assert "REGSANDBOX_GATEWAY_STS_KEY_SECRET" not in operator
    assert operator["REGSANDBOX_GATEWAY_URL"] == "http://rs-gateway.rsb.svc:9000"


def test_the_s3_surface_can_be_turned_off(chart: Path) -> None:
    docs = _docs(_render(chart, "gateway.s3.enabled=false"))
    gateway = _container(docs, "gateway")
    assert "REGSANDBOX_GATEWAY_STS_KEY_FILE" not in _env(gateway)
    assert all(v["name"] != "sts-keys" for v in gateway["pod"]["volumes"])
    operator = _env(_container(docs, "operator"))
    assert not {"REGSANDBOX_GATEWAY_URL", "REGSANDBOX_GATEWAY_STS_KEY_SECRET"} & set(operator)
