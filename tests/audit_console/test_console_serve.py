"""The console of ``sandboxctl audit serve``, run as the chart runs it, on the real control plane.

The process finds its pages and assets in the installed package, honours
``--console-session-minutes`` and ``--console-secure-cookies`` (behind a TLS-terminating
ingress the process itself sees plain HTTP), and never writes the officer's token to
its output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from audit.entry import Actor, Event, Resource
from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.processes import free_port
from tests.audit_console.conftest import Console
from tests.servers import stop_process, wait_healthy

pytestmark = pytest.mark.integration


def _log(path: Path, key: Path, tenant: str) -> None:
    origin = "audit.regsandbox.test/console-served"
    with AuditLog.create(path, origin, generate_key_file(key, origin)) as log:
        log.append(
            Event(
                actor=Actor(user="u"),
                action="dataset.read",
                resource=Resource(kind="Dataset", name="loans", tenant=tenant),
                outcome="success",
            )
        )
        log.publish_checkpoint()


def test_the_served_console_signs_in_with_the_configured_session(
    console: Console, tmp_path: Path
) -> None:
    key = tmp_path / "log.key"
    _log(tmp_path / "log", key, console.tenant_a)
    writers = tmp_path / "writers"
    writers.write_text("")
    port = free_port()
    output = tmp_path / "serve.log"
    command = [
        sys.executable, "-m", "sandbox.cli", "audit", "serve",
        "--log", str(tmp_path / "log"), "--key", str(key), "--writers", str(writers),
        "--listen", f"127.0.0.1:{port}", "--kube-readers",
        "--kubeconfig", str(console.service_kubeconfig),
        "--console-session-minutes", "2", "--console-secure-cookies",
    ]  # fmt: skip
    with output.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    token = console.tokens["tenant-a"]
    try:
        wait_healthy(proc, f"{url}/healthz", output)
        web = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
        form = web.get("/console/login")
        assert form.status_code == 200
        found = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert found
        nonce = found.group(1)
        answer = web.post(
            "/console/login",
            data={"csrf": nonce, "token": token, "tenant": console.tenant_a},
            headers={"Cookie": f"regsandbox_console_login={nonce}"},  # Secure: sent by hand
        )
        assert answer.status_code == 303, answer.text
        jar: SimpleCookie = SimpleCookie()
        for value in answer.headers.get_list("set-cookie"):
            if value.startswith("regsandbox_console="):
                jar.load(value)
        morsel = jar["regsandbox_console"]
        assert morsel["secure"]
        assert morsel["max-age"] == "120"
        page = web.get(
            answer.headers["location"], headers={"Cookie": f"regsandbox_console={morsel.value}"}
        )
        assert page.status_code == 200
        assert "loans" in page.text
        assert web.get("/console/static/verify.js").status_code == 200
    finally:
        stop_process(proc)
    assert token not in output.read_text()
