"""The console over the service's own TLS listener: client certificates and Secure cookies.

Where the audit service terminates TLS itself (``audit serve --tls-listen
--client-ca-file``), an officer's browser may present a client certificate of the
cluster's CA instead of pasting a token: the console then reads as the certificate's
user (CN) and groups (O), authorised by the same SubjectAccessReview, with no session at
all. And a sign-in reached over TLS gets a Secure cookie with no proxy header involved.
"""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from audit.service import create_app
from sandbox.cli.audit_tls import TlsListener, serving
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.pki import CertificateAuthority
from sandbox.devenv.processes import free_port
from sandbox.provision.names import tenant_namespace
from tests.audit_console.conftest import SECRET_OF_B, Console

pytestmark = pytest.mark.integration

_ROW = re.compile(r'class="entry-link" href="[^"]*/entries/(\d+)"')


@dataclass
class Tls:
    """The TLS listener and the files a client needs."""

    url: str
    serving_ca: Path
    cert: tuple[Path, Path]
    user: str


@pytest.fixture(scope="module")
def tls(
    console: Console,
    control_plane: ControlPlane,
    admin_api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Tls]:
    """The console's log behind a TLS listener accepting the cluster's client certificates."""
    base = tmp_path_factory.mktemp("console-tls")
    user = f"console-cert-auditor-{console.suffix}"
    cert = CertificateAuthority.load(control_plane.pki_dir).issue_client(user).write(base, "me")
    serving_ca = CertificateAuthority.create("console-serving-test")
    serving_ca.save(base / "serving")
    tls_cert, tls_key = serving_ca.issue_server("audit", ["localhost"], ["127.0.0.1"]).write(
        base / "serving", "tls"
    )
    client.RbacAuthorizationV1Api(admin_api).create_namespaced_role_binding(
        tenant_namespace(console.tenant_a),
        {
            "metadata": {"name": f"console-cert-{console.suffix}"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": f"regsandbox-tenant-auditor-{console.suffix}",
            },
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        },
    )
    policy = dataclasses.replace(console.policy, client_certificates=True)
    listener = TlsListener(
        "127.0.0.1", free_port(), tls_cert, tls_key, control_plane.pki_dir / "ca.crt"
    )
    with serving(create_app(console.log, policy), listener):
        yield Tls(f"https://127.0.0.1:{listener.port}", base / "serving" / "ca.crt", cert, user)


def _client(tls: Tls, *, with_cert: bool) -> httpx.Client:
    ctx = ssl.create_default_context(cafile=str(tls.serving_ca))
    if with_cert:
        ctx.load_cert_chain(str(tls.cert[0]), str(tls.cert[1]))
    return httpx.Client(base_url=tls.url, verify=ctx, timeout=30, follow_redirects=False)


def test_a_client_certificate_reads_its_tenants_console_without_signing_in(
    console: Console, tls: Tls
) -> None:
    with _client(tls, with_cert=True) as web:
        mine = web.get(f"/console/tenants/{console.tenant_a}/entries", params={"dataset": "loans"})
        assert mine.status_code == 200, mine.text
        assert tls.user in mine.text
        assert "Sign out" not in mine.text
        assert sorted(int(i) for i in _ROW.findall(mine.text)) == console.of(
            "a-loans-read", "a-loans-read-march", "a-denied"
        )
        assert SECRET_OF_B not in mine.text
        theirs = web.get(f"/console/tenants/{console.tenant_b}/entries")
        assert theirs.status_code == 403
        assert web.get("/console/log/entries").status_code == 403
        other = console.of("b-loans-read")[0]
        assert web.get(f"/console/tenants/{console.tenant_a}/entries/{other}").status_code == 403


def test_a_sign_in_over_tls_gets_a_secure_cookie(console: Console, tls: Tls) -> None:
    with _client(tls, with_cert=False) as web:
        assert web.get(f"/console/tenants/{console.tenant_a}/entries").status_code == 303
        form = web.get("/console/login")
        found = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert found
        answer = web.post(
            "/console/login",
            data={
                "csrf": found.group(1),
                "token": console.tokens["tenant-a"],
                "tenant": console.tenant_a,
            },
        )
        assert answer.status_code == 303, answer.text
        jar: SimpleCookie = SimpleCookie()
        for value in answer.headers.get_list("set-cookie"):
            if value.startswith("regsandbox_console="):
                jar.load(value)
        assert jar["regsandbox_console"]["secure"]
        assert web.get(answer.headers["location"]).status_code == 200


def test_a_sign_in_over_a_certificate_connection_checks_the_pasted_token(
    console: Console, tls: Tls
) -> None:
    """The token pasted into the sign-in form is what the session will read with, so it
    is the token that is checked, not the certificate the connection happens to carry:
    a made-up token opens no session (else the session would hold an unchecked token,
    recorded under the certificate's name)."""
    with _client(tls, with_cert=True) as web:
        form = web.get("/console/login")
        found = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert found
        answer = web.post(
            "/console/login",
            data={"csrf": found.group(1), "token": "not-a-token", "tenant": console.tenant_a},
        )
        assert answer.status_code == 401, answer.text
        assert not any(
            v.startswith("regsandbox_console=") and "Max-Age=0" not in v
            for v in answer.headers.get_list("set-cookie")
        )
