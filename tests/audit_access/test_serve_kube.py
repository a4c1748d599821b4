"""``sandboxctl audit serve --kube-readers``, run as the chart runs it, on the real control plane.

The service process uses the kubeconfig of its own ServiceAccount (bound to the chart's
review role only) and a log of its own; a tenant auditor reads their tenant's checkpoint
and entries and is refused the other tenant's and the whole log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from audit.entry import Actor, Event, Resource
from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.processes import free_port
from tests.audit_access.conftest import Setup
from tests.servers import stop_process, wait_healthy


def test_the_served_log_authorises_reads_with_kubernetes(setup: Setup, tmp_path: Path) -> None:
    origin = "audit.regsandbox.test/served"
    key = tmp_path / "log.key"
    signer = generate_key_file(key, origin)
    with AuditLog.create(tmp_path / "log", origin, signer) as log:
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
    writers = tmp_path / "writers"
    writers.write_text("")
    port = free_port()
    output = tmp_path / "serve.log"
    command = [
        sys.executable, "-m", "sandbox.cli", "audit", "serve",
        "--log", str(tmp_path / "log"), "--key", str(key), "--writers", str(writers),
        "--listen", f"127.0.0.1:{port}", "--kube-readers",
        "--kubeconfig", str(setup.service_kubeconfig), "--access-cache-seconds", "5",
    ]  # fmt: skip
    with output.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, f"{url}/healthz", output)
        auth = {"Authorization": f"Bearer {setup.tokens['tenant-a']}"}
        a, b = setup.tenant_a, setup.tenant_b
        mine = httpx.get(f"{url}/v1/tenants/{a}/entries", headers=auth, timeout=30)
        assert mine.status_code == 200, mine.text
        assert [e["index"] for e in mine.json()["entries"]] == [0]
        assert (
            httpx.get(f"{url}/v1/tenants/{b}/entries", headers=auth, timeout=30).status_code == 403
        )
        assert (
            httpx.get(f"{url}/v1/tenants/{a}/entries/1", headers=auth, timeout=30).status_code
            == 403
        )
        assert httpx.get(f"{url}/v1/checkpoint", headers=auth, timeout=30).status_code == 403
        assert httpx.get(f"{url}/v1/checkpoint", timeout=30).status_code == 401
    finally:
        stop_process(proc)
    assert setup.tokens["tenant-a"] not in output.read_text()
