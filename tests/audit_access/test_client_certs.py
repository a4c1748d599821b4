"""Client-certificate login where the audit service terminates TLS itself.

``sandboxctl audit serve --tls-listen … --client-ca-file <the cluster's client CA>``
runs as a process against the real control plane. Certificates are made here with
the cluster's own CA (so kube-apiserver would accept them as the same users), with
another CA, and already expired; RBAC binds the certificate users as the chart's tenant
auditor role in tenant A's home namespace, one by user (CN), one by group (O):

- a verified certificate reads tenant A (200, entries with proofs), gets 403 for tenant
  B and the whole log, and may not append (not a writer);
- a certificate of another CA, or an expired one, is refused — never read as anonymous;
- no certificate falls back to the bearer token (and to 401 without one);
- ``sandboxctl audit log --server`` uses the kubeconfig user's client certificate;
- a certificate never appends, nor reads the whole log as a Kubernetes writer it names;
- a certificate's ``system:masters`` group is ignored (it would bypass RBAC).
"""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client
from typer.testing import CliRunner

from audit.access import CachedAuthority
from audit.entry import Actor, Event, Resource
from audit.log import AuditLog
from audit.note import Signer
from audit.service import AccessPolicy, create_app
from audit.signing import generate_key_file
from sandbox.cli import app as cli_app
from sandbox.cli.audit_tls import TlsListener, serving
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.pki import CertificateAuthority, IssuedCert
from sandbox.devenv.processes import free_port
from sandbox.kube.audit_access import KubernetesReaders
from sandbox.kube.clients import kube_client
from sandbox.provision.names import tenant_namespace
from tests.audit_access.conftest import Setup
from tests.servers import stop_process, wait_healthy

pytestmark = pytest.mark.integration

ORIGIN = "audit.regsandbox.test/client-certs"


def _expired(ca: CertificateAuthority, user: str) -> IssuedCert:
    """A client certificate of ``ca`` for ``user`` whose validity ended an hour ago."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now - dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM), key_pem)


@dataclass
class Served:
    """The running service and what a test reads it with."""

    url: str
    """Base URL of the TLS listener."""
    serving_ca: Path
    """CA file the client trusts for the listener."""
    certs: dict[str, tuple[Path, Path]]
    """Name → (certificate, key) files."""
    users: dict[str, str]
    """Name → the user the certificate names."""
    signer: Signer
    """The log's key."""
    output: Path
    """The service's stdout and stderr."""


@pytest.fixture(scope="module")
def served(
    setup: Setup, control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("client-certs")
    suffix = setup.suffix
    cluster_ca = CertificateAuthority.load(control_plane.pki_dir)
    users = {
        "auditor": f"cert-auditor-{suffix}",
        "by-group": f"cert-colleague-{suffix}",
        "unbound": f"cert-nobody-{suffix}",
        "masters": f"cert-root-{suffix}",
    }
    office = f"bank-audit-office-{suffix}"
    issued = {
        "auditor": cluster_ca.issue_client(users["auditor"]),
        "by-group": cluster_ca.issue_client(users["by-group"], [office]),
        "unbound": cluster_ca.issue_client(users["unbound"]),
        "masters": cluster_ca.issue_client(users["masters"], ["system:masters"]),
        # Same user as the auditor: only the issuer or the validity is wrong.
        "other-ca": CertificateAuthority.create("not-the-cluster").issue_client(users["auditor"]),
        "expired": _expired(cluster_ca, users["auditor"]),
    }
    certs = {name: cert.write(base / "certs", name) for name, cert in issued.items()}
    server_ca = CertificateAuthority.create("audit-serving-test")
    server_ca.save(base / "serving")
    tls_cert, tls_key = server_ca.issue_server("audit", ["localhost"], ["127.0.0.1"]).write(
        base / "serving", "tls"
    )

    rbac = client.RbacAuthorizationV1Api(setup.admin)
    home = tenant_namespace(setup.tenant_a)
    role = f"regsandbox-tenant-auditor-{suffix}"
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
    for kind, subject in (("User", users["auditor"]), ("Group", office)):
        binding = {
            "metadata": {"name": f"cert-{kind.lower()}-{suffix}"},
            "roleRef": ref,
            "subjects": [{"kind": kind, "name": subject, "apiGroup": ref["apiGroup"]}],
        }
        rbac.create_namespaced_role_binding(home, binding)

    key = base / "log.key"
    signer = generate_key_file(key, ORIGIN)
    with AuditLog.create(base / "log", ORIGIN, signer) as log:
        for tenant in (setup.tenant_a, setup.tenant_b):
            log.append(
                Event(
                    actor=Actor(user="u"),
                    action="dataset.read",
                    resource=Resource(kind="Dataset", name="d", tenant=tenant),
                    outcome="success",
                )
            )
        log.publish_checkpoint()
    writers = base / "writers"
    writers.write_text("")
    port, tls_port, read_port = free_port(), free_port(), free_port()
    output = base / "serve.log"
    # As the chart runs it: the read server (its own process) terminates TLS for readers.
    command = [
        sys.executable, "-m", "sandbox.cli", "audit", "serve",
        "--log", str(base / "log"), "--key", str(key), "--writers", str(writers),
        "--listen", f"127.0.0.1:{port}", "--kube-readers",
        "--kubeconfig", str(setup.service_kubeconfig), "--access-cache-seconds", "0",
        "--tls-listen", f"127.0.0.1:{tls_port}", "--tls-cert", str(tls_cert),
        "--tls-key", str(tls_key), "--client-ca-file", str(control_plane.pki_dir / "ca.crt"),
        "--read-listen", f"127.0.0.1:{read_port}",
    ]  # fmt: skip
    with output.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}/healthz", output)
        wait_healthy(proc, f"http://127.0.0.1:{read_port}/healthz", output)
        yield Served(
            f"https://127.0.0.1:{tls_port}",
            base / "serving" / "ca.crt",
            certs,
            users,
            signer,
            output,
        )
    finally:
        stop_process(proc)


def _tls(served: Served, who: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(served.serving_ca))
    if who is not None:
        cert, key = served.certs[who]
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _get(served: Served, who: str | None, path: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=_tls(served, who), timeout=30) as http:
        return http.get(served.url + path, headers=headers).status_code


def test_a_verified_certificate_reads_its_tenant_as_its_user_or_group(
    setup: Setup, served: Served
) -> None:
    a, b = setup.tenant_a, setup.tenant_b
    for who in ("auditor", "by-group"):
        with httpx.Client(verify=_tls(served, who), timeout=30) as http:
            mine = http.get(f"{served.url}/v1/tenants/{a}/entries")
            assert mine.status_code == 200, (who, mine.text)
            assert [e["index"] for e in mine.json()["entries"]] == [0]
            assert mine.json()["entries"][0]["inclusion"] is not None
            assert http.get(f"{served.url}/v1/tenants/{b}/entries").status_code == 403
            assert http.get(f"{served.url}/v1/tenants/{a}/entries/1").status_code == 403
            assert http.get(f"{served.url}/v1/checkpoint").status_code == 403
            assert http.get(f"{served.url}/tlog/checkpoint").status_code == 403
            # the TLS listener is the read server's, which appends nothing for anyone
            appended = http.post(f"{served.url}/v1/entries", json={"events": []})
            assert appended.status_code == 405, appended.text
            assert "reads only" in appended.text
    assert _get(served, "unbound", f"/v1/tenants/{a}/entries") == 403


def test_a_certificate_cannot_claim_the_group_that_bypasses_rbac(
    setup: Setup, served: Served
) -> None:
    """kube-apiserver lets ``system:masters`` past every authorizer, and answers a
    SubjectAccessReview naming it "allowed". A certificate names its groups itself, and
    the service may be given a CA other than the cluster's: the group is dropped, so a
    certificate reads only what RBAC bindings grant its user and other groups."""
    for path in ("/v1/checkpoint", "/tlog/checkpoint", f"/v1/tenants/{setup.tenant_a}/entries"):
        assert _get(served, "masters", path) == 403, path


@pytest.mark.parametrize("who", ["other-ca", "expired"])
def test_a_certificate_that_does_not_verify_is_refused_never_anonymous(
    setup: Setup, served: Served, who: str
) -> None:
    # The same user as the bound auditor: only the issuer or the validity differs.
    try:
        status = _get(served, who, f"/v1/tenants/{setup.tenant_a}/entries")
    except httpx.TransportError:
        return  # refused in the TLS handshake
    assert status == 401, f"a {who} certificate was answered {status}"


def test_without_a_certificate_the_bearer_token_is_used(setup: Setup, served: Served) -> None:
    a = setup.tenant_a
    assert _get(served, None, f"/v1/tenants/{a}/entries", setup.tokens["tenant-a"]) == 200
    assert (
        _get(served, None, f"/v1/tenants/{setup.tenant_b}/entries", setup.tokens["tenant-a"]) == 403
    )
    assert _get(served, None, f"/v1/tenants/{a}/entries") == 401
    assert setup.tokens["tenant-a"] not in served.output.read_text()


def test_the_cli_reads_with_the_kubeconfig_users_certificate(
    setup: Setup, served: Served, control_plane: ControlPlane
) -> None:
    kubeconfig = control_plane.add_user(served.users["auditor"], [])
    remote = [
        "--server", served.url, "--vkey", served.signer.verifier.vkey,
        "--kubeconfig", str(kubeconfig), "--ca-file", str(served.serving_ca),
    ]  # fmt: skip
    runner = CliRunner()
    mine = runner.invoke(
        cli_app, ["audit", "log", *remote, "--tenant", setup.tenant_a, "-o", "json"]
    )
    assert mine.exit_code == 0, mine.stderr
    assert '"dataset.read"' in mine.stdout
    assert setup.tenant_a in mine.stdout
    other = runner.invoke(cli_app, ["audit", "log", *remote, "--tenant", setup.tenant_b])
    assert other.exit_code == 1
    assert "403" in other.stderr


def test_a_certificate_never_appends_nor_reads_as_a_kubernetes_writer(
    setup: Setup, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """In process: the same listener, a service that lists one writer identity.

    A certificate is vouched for only by the CA the service was given, which names any
    user it signs (a cert-manager issuer lets anyone who may create a Certificate pick
    its common name). Writers append with their ServiceAccount token, which the API
    server vouches for; a certificate naming a writer appends nothing and gets no
    whole-log read — a forged entry in the audit log is the one thing it must not buy."""
    cluster_ca = CertificateAuthority.load(control_plane.pki_dir)
    writer = f"system:serviceaccount:{setup.auditors_ns}:cert-writer"
    certs = {
        "writer": cluster_ca.issue_client(writer).write(tmp_path, "writer"),
        "reader": cluster_ca.issue_client(f"cert-reader-{setup.suffix}").write(tmp_path, "reader"),
    }
    server_ca = CertificateAuthority.create("audit-serving-writers")
    tls_cert, tls_key = server_ca.issue_server("audit", [], ["127.0.0.1"]).write(tmp_path, "tls")
    (tmp_path / "serving-ca.crt").write_bytes(server_ca.cert_pem)
    authority = CachedAuthority(
        KubernetesReaders(kube_client(setup.service_kubeconfig), tenant_namespace), ttl=0
    )
    policy = AccessPolicy(
        writers={},
        readers={},
        authority=authority,
        kube_writers=frozenset({writer}),
        client_certificates=True,
    )
    signer = Signer.generate(ORIGIN)
    listener = TlsListener(
        "127.0.0.1", free_port(), tls_cert, tls_key, control_plane.pki_dir / "ca.crt"
    )
    event = Event(
        actor=Actor(user=writer),
        action="policy.changed",
        resource=Resource(kind="SandboxPolicy", name="p"),
        outcome="success",
    ).model_dump(mode="json")
    with (
        AuditLog.create(tmp_path / "log", ORIGIN, signer) as log,
        serving(create_app(log, policy), listener),
    ):
        url = f"https://127.0.0.1:{listener.port}/v1/entries"
        answers = {}
        for who, (cert, key) in certs.items():
            ctx = ssl.create_default_context(cafile=str(tmp_path / "serving-ca.crt"))
            ctx.load_cert_chain(str(cert), str(key))
            with httpx.Client(verify=ctx, timeout=30) as http:
                answers[who] = http.post(url, json={"events": [event]})
        assert answers["writer"].status_code == 403, answers["writer"].text
        assert answers["reader"].status_code == 403
        assert log.size == 0
        cert, key = certs["writer"]
        ctx = ssl.create_default_context(cafile=str(tmp_path / "serving-ca.crt"))
        ctx.load_cert_chain(str(cert), str(key))
        with httpx.Client(verify=ctx, timeout=30) as http:
            whole = http.get(f"https://127.0.0.1:{listener.port}/v1/checkpoint")
        assert whole.status_code == 403, whole.text
    # A connection keeps the identity of its handshake: no renegotiation, TLS 1.2 or newer.
    config = listener.config(create_app(log, policy))
    config.load()
    assert config.ssl is not None
    assert config.ssl.options & ssl.OP_NO_RENEGOTIATION
    assert config.ssl.minimum_version == ssl.TLSVersion.TLSv1_2
    assert config.ssl.verify_mode == ssl.CERT_OPTIONAL
