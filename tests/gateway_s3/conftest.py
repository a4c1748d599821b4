"""Fixtures for the gateway's S3 surface: the REST gateway's world, plus STS and S3.

The control plane, MinIO, the audit log, the tenant with its sandboxes (``alpha``
granted ``<t>-claims``, ``beta`` granted ``<t>-other``, ``old`` expired, ``idle`` not
Ready) and their pod-bound tokens are the ones of :mod:`tests.gateway.conftest`. The
gateway here also has an outbox and the S3/STS surface, served by uvicorn on a free
127.0.0.1 port. Clients are configured only by environment, as a pod would be.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from pydantic import SecretStr

from sandbox.devenv.minio import MinioServer
from sandbox.gateway import AUDIENCE, Gateway, GrantResolver, Storage, TokenReviewer, create_app
from sandbox.gateway.build import outbox_writer
from sandbox.gateway.s3api import S3Surface
from sandbox.gateway.settings import GatewaySettings
from sandbox.gateway.sts import CredentialIssuer
from tests.gateway import conftest as rest
from tests.gateway.conftest import SwitchableSink, World
from tests.servers import serve_app

# The REST gateway tests' session fixtures, shared (one MinIO, one world per session).
s3 = rest.s3
world = rest.world
gateway_api = rest.gateway_api
audit_sink = rest.audit_sink

OUTBOX = "gateway-s3-outbox"
ROLE_ARN = "arn:aws:iam::000000000000:role/regsandbox-workload"


@pytest.fixture(scope="session")
def server_key() -> bytes:
    """The STS server key every replica mounts."""
    return os.urandom(32)


@pytest.fixture(scope="session")
def s3_gateway(
    gateway_api: client.ApiClient, s3: MinioServer, audit_sink: SwitchableSink, world: World
) -> Gateway:
    """A gateway with an outbox on the real MinIO (grants read on every request)."""
    store = s3.client()
    with contextlib.suppress(store.exceptions.BucketAlreadyOwnedByYou):
        store.create_bucket(Bucket=OUTBOX)
    settings = GatewaySettings.load(
        audit_log_dir=Path("/nonexistent"),
        s3_access_key_id=s3.access_key,
        s3_secret_access_key=s3.secret_key,
        outbox_bucket=OUTBOX,
        outbox_endpoint=s3.endpoint,
    )
    return Gateway(
        reviewer=TokenReviewer(gateway_api, AUDIENCE, cache_seconds=10.0),
        grants=GrantResolver(gateway_api, cache_seconds=0.0),
        storage=Storage(
            SecretStr(s3.access_key), SecretStr(s3.secret_key), allowed_endpoints=[s3.endpoint]
        ),
        audit=audit_sink,
        chunk_bytes=1024 * 1024,
        outbox=outbox_writer(settings),
    )


@pytest.fixture(scope="session")
def surface(s3_gateway: Gateway, server_key: bytes) -> S3Surface:
    """The S3 and STS surface of that gateway."""
    return S3Surface(s3_gateway, CredentialIssuer([server_key]))


@pytest.fixture(scope="session")
def s3_url(s3_gateway: Gateway, surface: S3Surface) -> Iterator[str]:
    """The gateway (REST, S3 and STS) on a free 127.0.0.1 port."""
    with serve_app(create_app(s3_gateway, surface), what="the gateway") as url:
        yield url


@pytest.fixture(scope="session")
def replica_url(s3_gateway: Gateway, server_key: bytes) -> Iterator[str]:
    """A second replica: its own surface and replay memory, the same server key."""
    other = S3Surface(s3_gateway, CredentialIssuer([server_key]))
    with serve_app(create_app(s3_gateway, other), what="a second gateway replica") as url:
        yield url


class PodEnv:
    """Puts a pod's AWS environment in place: endpoints, role, token file, region."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, directory: Path, url: str) -> None:
        self._mp = monkeypatch
        self._dir = directory
        self.url = url
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(directory / "no-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(directory / "no-credentials"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    def use(self, token: str, *, url: str | None = None) -> None:
        """Act as the pod ``token`` is bound to (its projected token file)."""
        path = self._dir / "token"
        path.write_text(token, encoding="utf-8")
        endpoint = url or self.url
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ENDPOINT_URL_STS": endpoint,
            "AWS_ROLE_ARN": ROLE_ARN,
            "AWS_ROLE_SESSION_NAME": "notebook",
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(path),
            "AWS_REGION": "us-east-1",
        }.items():
            self._mp.setenv(name, value)


@pytest.fixture
def pod_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_url: str) -> PodEnv:
    """The environment the operator gives a sandbox pod (call ``use(token)``)."""
    return PodEnv(monkeypatch, tmp_path, s3_url)


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "gateway.crt", directory / "gateway.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture(scope="session")
def tls_gateway(
    s3_gateway: Gateway, surface: S3Surface, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """The same gateway behind TLS (as behind an ingress or a service mesh): boto3 and
    s3fs then send their defaults, aws-chunked bodies with a checksum trailer.
    Yields the https URL and the CA bundle (AWS_CA_BUNDLE) that trusts it."""
    import threading
    import time

    import uvicorn

    from sandbox.devenv.processes import free_port

    cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    port = free_port()
    config = uvicorn.Config(
        create_app(s3_gateway, surface),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the TLS gateway did not start")
            time.sleep(0.02)
        yield f"https://127.0.0.1:{port}", cert
    finally:
        server.should_exit = True
        thread.join(timeout=10)
