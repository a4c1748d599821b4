"""The published contract: OpenAPI fuzzing, flat memory, least-privilege RBAC, the CLI."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from kubernetes import client
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from typer.testing import CliRunner

from sandbox.cli.gateway import app as gateway_cli
from sandbox.gateway import Gateway, create_app
from sandbox.gateway.rbac import GATEWAY_NAME

from .conftest import BIG, SYSTEM_NS, World


@pytest.mark.integration
@pytest.mark.s3
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("pin_dataset", [True, False])
def test_openapi_fuzzing_finds_no_server_error(
    gateway: Gateway, world: World, mode: GenerationMode, pin_dataset: bool
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(gateway))
    auth = {"Authorization": f"Bearer {world.token('alpha')}"}
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {(op.method.upper(), op.path) for op in operations} == {
        ("GET", "/v1/datasets/{dataset}/objects"),
        ("HEAD", "/v1/datasets/{dataset}/objects/{key}"),
        ("GET", "/v1/datasets/{dataset}/objects/{key}"),
        ("PUT", "/v1/outbox/{path}"),
    }
    for operation in operations:
        if operation.method.upper() == "PUT":
            continue  # this gateway has no outbox (503); fuzzed in test_outbox_write.py
        pinned = {"dataset": world.claims} if pin_dataset else None

        @given(case=operation.as_strategy(mode, path_parameters=pinned))
        @settings(
            max_examples=15,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=auth, checks=[not_a_server_error])

        run()


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.integration
@pytest.mark.s3
def test_streaming_keeps_memory_flat(gateway_url: str, world: World) -> None:
    url = f"{gateway_url}/v1/datasets/{world.claims}/objects/big.bin"
    auth = {"Authorization": f"Bearer {world.token('alpha')}"}
    with httpx.stream("GET", url, headers=auth, timeout=60) as r:  # warm-up
        for _ in r.iter_bytes():
            pass
    baseline, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    digest = hashlib.sha256()
    for _ in range(3):  # 72 MiB in all, through a process holding gateway and client
        with httpx.stream("GET", url, headers=auth, timeout=60) as r:
            for chunk in r.iter_bytes(256 * 1024):
                digest.update(chunk)
    done.set()
    sampler.join(timeout=5)
    growth = peak[0] - baseline
    assert growth < BIG // 2, f"RSS grew by {growth / 2**20:.1f} MiB while streaming"


@pytest.mark.integration
def test_gateway_rbac_allows_exactly_what_it_needs(
    admin_api: client.ApiClient, gateway_api: client.ApiClient
) -> None:
    authz = client.AuthorizationV1Api(admin_api)
    user = f"system:serviceaccount:{SYSTEM_NS}:{GATEWAY_NAME}"

    def can(verb: str, resource: str, group: str = "", namespace: str | None = None) -> bool:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=["system:serviceaccounts", f"system:serviceaccounts:{SYSTEM_NS}"],
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, resource=resource, group=group, namespace=namespace
                ),
            )
        )
        return bool(authz.create_subject_access_review(review).status.allowed)

    assert can("create", "tokenreviews", "authentication.k8s.io")
    assert can("get", "namespaces")
    assert can("get", "sandboxes", "regsandbox.io", "tenant-x")
    assert can("get", "datasets", "regsandbox.io")
    assert not can("list", "sandboxes", "regsandbox.io", "tenant-x")
    assert not can("watch", "datasets", "regsandbox.io")
    assert not can("list", "namespaces")
    assert not can("get", "secrets", "", "tenant-x")
    assert not can("create", "serviceaccounts/token", "", "tenant-x")
    assert not can("patch", "sandboxes/status", "regsandbox.io", "tenant-x")


def test_cli_serve_refuses_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUDIT_URL", "AUDIT_LOG_DIR"):
        monkeypatch.delenv(f"REGSANDBOX_GATEWAY_{name}", raising=False)
    result = CliRunner().invoke(gateway_cli, ["serve", "--listen", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert "audit" in result.output
    usage = CliRunner().invoke(gateway_cli, ["serve", "--listen", "nope"])
    assert usage.exit_code == 2
