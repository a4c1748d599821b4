"""Writers append with their own ServiceAccount tokens: no shared writer secret.

``sandboxctl audit serve --kube-writer IDENTITY`` — what the chart runs — checks each
append's bearer token with a TokenReview for the service's audience and lets only the
named identities append. The chart therefore generates no token and looks nothing up
(GitOps-safe), and a writer's token is the projected one the kubelet rotates; the client
re-reads its token file, so a rotated token keeps working without a restart.

As an attacker would try: an authenticated identity that is not a writer (403), the
writer's token minted for another audience (401), no token (401), a garbage token (401).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from audit.client import AuditClient, AuditUnavailable, TokenFile
from audit.entry import Actor, Event, Resource
from audit.log import AuditLog, LogReader
from audit.signing import generate_key_file
from sandbox.devenv.processes import free_port
from sandbox.kube.audit_access import AUDIENCE
from tests.audit_access.conftest import Setup, sa_token
from tests.servers import stop_process, wait_healthy

pytestmark = pytest.mark.integration


def _event(n: int) -> dict[str, object]:
    return Event(
        actor=Actor(user="system:serviceaccount:regsandbox-system:regsandbox-operator"),
        action="sandbox.provisioned",
        resource=Resource(kind="Sandbox", name=f"s{n}", tenant="t"),
        outcome="success",
    ).model_dump(mode="json")


def _size(log: Path) -> int:
    with LogReader(log) as reader:
        return reader.size


def test_only_the_named_service_accounts_append_with_their_own_tokens(
    setup: Setup, tmp_path: Path
) -> None:
    core = client.CoreV1Api(setup.admin)
    writer_sa = "writer"
    core.create_namespaced_service_account(setup.auditors_ns, {"metadata": {"name": writer_sa}})
    writer = f"system:serviceaccount:{setup.auditors_ns}:{writer_sa}"
    origin = "audit.regsandbox.test/kube-writers"
    key = tmp_path / "log.key"
    AuditLog.create(tmp_path / "log", origin, generate_key_file(key, origin)).close()
    port = free_port()
    output = tmp_path / "serve.log"
    command = [
        sys.executable, "-m", "sandbox.cli", "audit", "serve",
        "--log", str(tmp_path / "log"), "--key", str(key), "--kube-writer", writer,
        "--listen", f"127.0.0.1:{port}", "--kubeconfig", str(setup.service_kubeconfig),
        "--access-cache-seconds", "0",
    ]  # fmt: skip
    with output.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    token = sa_token(setup.admin, setup.auditors_ns, writer_sa, AUDIENCE)
    elsewhere = sa_token(setup.admin, setup.auditors_ns, writer_sa, "regsandbox-gateway")
    try:
        wait_healthy(proc, f"{url}/healthz", output)

        def append(bearer: str | None) -> httpx.Response:
            headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
            return httpx.post(
                f"{url}/v1/entries", json={"events": [_event(0)]}, headers=headers, timeout=30
            )

        accepted = append(token)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["indices"] == [0]
        # Authenticated, but not a writer.
        assert append(setup.tokens["tenant-a"]).status_code == 403
        # The writer's own token, minted for another audience.
        assert append(elsewhere).status_code == 401
        assert append(None).status_code == 401
        assert append("not-a-token").status_code == 401
        # The writer reads what it appended (its receipts) with the same token; others
        # get nothing without open reads.
        mine = httpx.get(
            f"{url}/v1/checkpoint", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert mine.status_code == 200, mine.text
        assert httpx.get(f"{url}/v1/checkpoint", timeout=30).status_code == 401

        # The client presents the token in its file now: a rotated token keeps working,
        # an emptied file fails closed (never an empty or stale token).
        token_file = tmp_path / "token"
        token_file.write_text(token)
        with AuditClient(url, TokenFile(token_file), timeout=30) as audit:
            [first] = audit.append([Event.model_validate(_event(1))])
            token_file.write_text(sa_token(setup.admin, setup.auditors_ns, writer_sa, AUDIENCE))
            [second] = audit.append([Event.model_validate(_event(2))])
            token_file.write_text("")
            with pytest.raises(AuditUnavailable, match="is empty"):
                audit.append([Event.model_validate(_event(3))])
        assert (first, second) == (1, 2)
        # Exactly the three accepted appends are in the log (its checkpoint follows within
        # a second of an append: a bounded poll).
        deadline = time.monotonic() + 30
        while _size(tmp_path / "log") < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _size(tmp_path / "log") == 3
    finally:
        stop_process(proc)
    served = output.read_text()
    assert token not in served
    assert elsewhere not in served
