"""Fixtures for the dataset gateway: a real control plane, a real MinIO, a real audit log.

One tenant with four sandboxes whose status the tests set themselves (no operator):

- ``alpha``: Ready, unexpired, granted ``<t>-claims`` (prefix ``claims/2024/``);
- ``beta``: Ready, unexpired, granted ``<t>-other`` only;
- ``old``: Ready but expired, granted ``<t>-claims``;
- ``idle``: not Ready, granted ``<t>-claims``.

Each sandbox namespace holds a ServiceAccount ``workload`` and a Pod (which never runs:
there is no kubelet) that tokens are bound to. The gateway runs in a uvicorn thread on a
free 127.0.0.1 port, as its own least-privilege ServiceAccount.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from audit.client import AuditUnavailable, LocalAuditSink
from audit.entry import Entry, Event
from audit.log import AuditLog
from audit.note import Signer
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.minio import MinioServer, running_minio
from sandbox.devenv.operator_process import service_account_kubeconfig
from sandbox.gateway import AUDIENCE, Gateway, GrantResolver, Storage, TokenReviewer, create_app
from sandbox.gateway.rbac import GATEWAY_NAME, gateway_rbac
from sandbox.kube.apply import apply
from sandbox.provision.names import LABEL_SANDBOX, LABEL_TENANT, sandbox_namespace
from sandbox.testing import api_client, install_crds, sandbox_manifest
from tests.servers import serve_app

ORIGIN = "audit.regsandbox.test/gateway"
BUCKET = "gateway-datasets"
SYSTEM_NS = "regsandbox-gateway-test"
BIG = 24 * 1024 * 1024
CHUNK = 1024 * 1024


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    """A real MinIO with the test bucket."""
    with running_minio(tmp_path_factory.mktemp("gw-minio")) as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


class SwitchableSink:
    """An AuditSink in front of a real log that tests can make fail on demand."""

    def __init__(self, inner: LocalAuditSink) -> None:
        self.inner = inner
        self.fail_after: int | None = None  # appends still allowed before failing
        self._lock = threading.Lock()

    def append(self, events: Sequence[Event]) -> list[int]:
        with self._lock:
            if self.fail_after is not None:
                if self.fail_after <= 0:
                    raise AuditUnavailable("audit log down (test)")
                self.fail_after -= 1
        return self.inner.append(events)

    def checkpoint(self) -> bytes:
        return self.inner.checkpoint()

    def prove(self, index: int) -> bytes:
        return self.inner.prove(index)

    def entries_since(self, start: int) -> list[Entry]:
        log = self.inner.log
        return [log.entry(i) for i in range(start, log.size)]

    @property
    def size(self) -> int:
        return self.inner.log.size


class SpyStorage(Storage):
    """Storage that remembers every full key it was asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys: list[str] = []

    def head(self, location: Any, key: str, conditions: Any = None) -> Any:
        self.keys.append(key)
        return super().head(location, key, conditions)

    def open(self, location: Any, key: str, byte_range: Any, conditions: Any = None) -> Any:
        self.keys.append(key)
        return super().open(location, key, byte_range, conditions)

    def list(self, location: Any, prefix: str, after: str | None, max_keys: int) -> Any:
        self.keys.append(prefix)
        return super().list(location, prefix, after, max_keys)


@dataclass
class World:
    """The objects and tokens the gateway tests use."""

    tenant: str
    claims: str
    other: str
    objects: dict[str, bytes] = field(repr=False)
    tokens: dict[str, str] = field(default_factory=dict, repr=False)
    admin: Any = field(default=None, repr=False)

    def token(self, sandbox: str) -> str:
        return self.tokens[sandbox]


def _status_patch(api: client.ApiClient, namespace: str, name: str, status: dict[str, Any]) -> None:
    api.call_api(
        f"/apis/regsandbox.io/v1alpha1/namespaces/{namespace}/sandboxes/{name}/status",
        "PATCH",
        header_params={"Content-Type": "application/merge-patch+json"},
        body={"status": status},
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )


def set_sandbox_status(
    api: client.ApiClient,
    tenant: str,
    sandbox: str,
    *,
    ready: bool = True,
    expires_in: dt.timedelta = dt.timedelta(hours=1),
    granted: dict[str, bool] | None = None,
) -> None:
    """Write a Sandbox status as the operator would (status subresource)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    status = {
        "namespace": sandbox_namespace(tenant, sandbox),
        "tenant": tenant,
        "ready": "True" if ready else "False",
        "expiresAt": (now + expires_in).isoformat().replace("+00:00", "Z"),
        "datasets": [
            {"name": n, "granted": g, "violations": [] if g else ["TEST_DENIED"]}
            for n, g in (granted or {}).items()
        ],
        "conditions": [
            {
                "type": "Ready",
                "status": "True" if ready else "False",
                "reason": "Provisioned" if ready else "Provisioning",
                "message": "",
                "observedGeneration": 1,
                "lastTransitionTime": now.isoformat().replace("+00:00", "Z"),
            }
        ],
    }
    _status_patch(api, f"tenant-{tenant}", sandbox, status)


def pod_token(
    api: client.ApiClient,
    namespace: str,
    pod: str | None,
    *,
    audience: str = AUDIENCE,
    service_account: str = "workload",
) -> str:
    """A TokenRequest token for ``service_account``, bound to ``pod`` if given."""
    core = client.CoreV1Api(api)
    ref = None
    if pod is not None:
        uid = core.read_namespaced_pod(pod, namespace).metadata.uid
        ref = client.V1BoundObjectReference(kind="Pod", api_version="v1", name=pod, uid=uid)
    spec = client.V1TokenRequestSpec(
        audiences=[audience], expiration_seconds=3600, bound_object_ref=ref
    )
    result = core.create_namespaced_service_account_token(
        service_account, namespace, client.AuthenticationV1TokenRequest(spec=spec)
    )
    return str(result.status.token)


def _dataset(name: str, prefix: str, endpoint: str) -> dict[str, Any]:
    return {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": name},
        "spec": {
            "sector": "finance",
            "jurisdiction": "LU",
            "location": {
                "bucket": BUCKET,
                "prefix": prefix,
                "region": "us-east-1",
                "endpoint": endpoint,
            },
            "personalData": "pseudonymised",
            "allowedPurposes": ["fraud-detection"],
        },
    }


def _no_operator_running(directory: Path) -> None:
    """These tests write Sandbox status themselves; an operator on the same control plane
    (its kubeconfig lives under the control plane's directory) would overwrite it."""
    marker = str(directory).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"operators.main" in argv and any(marker in arg for arg in argv):
            pytest.fail(
                "an operator process is running beside the gateway tests; run them alone or "
                "in the default order (tests/gateway before tests/lifecycle)"
            )


@pytest.fixture(scope="session")
def world(
    admin_api: client.ApiClient, repo_root: Path, s3: MinioServer, control_plane: ControlPlane
) -> World:
    """Tenant, sandboxes, datasets, objects and tokens (see the module docstring)."""
    _no_operator_running(control_plane.directory)
    install_crds(admin_api, repo_root / "charts/regsandbox/crds")
    tenant = f"gw{secrets.token_hex(3)}"
    w = World(tenant, f"{tenant}-claims", f"{tenant}-other", {}, admin=admin_api)
    store = s3.client()
    w.objects = {
        "small.csv": b"id,amount\n1,10\n2,20\n",
        "dir/part-0001.bin": os.urandom(300_000),
        "big.bin": os.urandom(BIG),
        "empty.bin": b"",
    }
    for key, data in w.objects.items():
        store.put_object(Bucket=BUCKET, Key=f"claims/2024/{key}", Body=data)
    store.put_object(Bucket=BUCKET, Key="claims/2024-secret/leak.txt", Body=b"outside")
    store.put_object(Bucket=BUCKET, Key="other/x.txt", Body=b"other dataset")
    apply(
        admin_api,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"tenant-{tenant}"}},
    )
    apply(admin_api, _dataset(w.claims, "claims/2024/", s3.endpoint))
    apply(admin_api, _dataset(w.other, "other", s3.endpoint))
    core = client.CoreV1Api(admin_api)
    grants = {
        "alpha": ({w.claims: True, w.other: False}, True, dt.timedelta(hours=1)),
        "beta": ({w.other: True}, True, dt.timedelta(hours=1)),
        "old": ({w.claims: True}, True, dt.timedelta(seconds=-5)),
        "idle": ({w.claims: True}, False, dt.timedelta(hours=1)),
    }
    for name, (granted, ready, expires) in grants.items():
        ns = sandbox_namespace(tenant, name)
        apply(
            admin_api,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {LABEL_TENANT: tenant, LABEL_SANDBOX: name}},
            },
        )
        apply(
            admin_api,
            sandbox_manifest(
                name,
                tenant,
                lifetime={"ttl": "1h"},
                datasets=[{"name": d, "purpose": "fraud-detection"} for d in granted],
            ),
        )
        set_sandbox_status(
            admin_api, tenant, name, ready=ready, expires_in=expires, granted=granted
        )
        apply(
            admin_api,
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": "workload", "namespace": ns},
            },
        )
        core.create_namespaced_pod(
            ns,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "train-0"},
                "spec": {
                    "serviceAccountName": "workload",
                    "containers": [{"name": "main", "image": "registry.invalid/train:1"}],
                },
            },
        )
        w.tokens[name] = pod_token(admin_api, ns, "train-0")
    # A namespace that looks like a sandbox's but is not labelled as one.
    fake = f"sbx-{tenant}-fake"
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": fake}})
    apply(
        admin_api,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "workload", "namespace": fake},
        },
    )
    core.create_namespaced_pod(
        fake,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "serviceAccountName": "workload",
                "containers": [{"name": "main", "image": "x.invalid/y"}],
            },
        },
    )
    w.tokens["fake"] = pod_token(admin_api, fake, "p")
    return w


@pytest.fixture(scope="session")
def gateway_api(admin_api: client.ApiClient, control_plane: Any) -> client.ApiClient:
    """An ApiClient authenticated as the gateway's least-privilege ServiceAccount."""
    apply(admin_api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM_NS}})
    for obj in gateway_rbac(SYSTEM_NS):
        apply(admin_api, obj)
    path = service_account_kubeconfig(
        admin_api,
        SYSTEM_NS,
        control_plane.directory / "users" / "gateway-sa.kubeconfig",
        service_account=GATEWAY_NAME,
    )
    return api_client(path)


@pytest.fixture(scope="session")
def audit_sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwitchableSink]:
    """A real, fsync'ing audit log the gateway writes to."""
    directory = tmp_path_factory.mktemp("gw-audit") / "log"
    signer = Signer.generate(ORIGIN)
    AuditLog.create(directory, ORIGIN, signer).close()
    sink = LocalAuditSink(directory, signer)
    try:
        yield SwitchableSink(sink)
    finally:
        sink.close()


@pytest.fixture(scope="session")
def gateway(
    gateway_api: client.ApiClient, s3: MinioServer, audit_sink: SwitchableSink, world: World
) -> Gateway:
    """The gateway's parts, with a spying storage and a switchable audit sink."""
    from pydantic import SecretStr

    return Gateway(
        reviewer=TokenReviewer(gateway_api, AUDIENCE, cache_seconds=10.0),
        grants=GrantResolver(gateway_api, cache_seconds=0.0),
        storage=SpyStorage(
            SecretStr(s3.access_key), SecretStr(s3.secret_key), allowed_endpoints=[s3.endpoint]
        ),
        audit=audit_sink,
        chunk_bytes=CHUNK,
    )


@pytest.fixture(scope="session")
def gateway_url(gateway: Gateway) -> Iterator[str]:
    """The gateway served by uvicorn on a free 127.0.0.1 port."""
    with serve_app(create_app(gateway), what="the gateway") as url:
        yield url


@pytest.fixture
def audit_failing(audit_sink: SwitchableSink) -> Iterator[SwitchableSink]:
    """The audit sink, restored to working order after the test."""
    try:
        yield audit_sink
    finally:
        audit_sink.fail_after = None


def sha256(data: bytes) -> str:
    """Hex SHA-256."""
    return hashlib.sha256(data).hexdigest()
