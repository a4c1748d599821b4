"""``sandboxctl audit serve`` and ``sandboxctl audit witness …`` via register()."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from audit.checkpoint import Checkpoint, sign_checkpoint
from audit.client import AuditClient
from audit.entry import Event
from audit.log import AuditLog
from audit.merkle import EMPTY_ROOT
from audit.service import token_digest
from audit.signing import generate_key_file
from audit.witness import CosignatureVerifier
from sandbox.cli.audit_serve import register
from sandbox.devenv.processes import free_port
from tests.servers import stop_process

ORIGIN = "audit.regsandbox.test/log"
TOKEN = "cli-writer-token-0123456789"
MakeEvent = Callable[..., Event]
RUNNER = [
    sys.executable,
    "-c",
    "import typer; from sandbox.cli.audit_serve import register; "
    "app = typer.Typer(); register(app); app()",
]


def fresh_app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@contextmanager
def running(args: list[str], url: str, tmp_path: Path) -> Iterator[None]:
    """Run the CLI in a subprocess until ``url`` answers (bounded wait)."""
    out = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([*RUNNER, *args], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"server exited {proc.returncode}: {(tmp_path / 'server.log').read_text()}"
                )
            try:
                httpx.get(url, timeout=0.5)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not start within 30s")
                time.sleep(0.1)
        yield
    finally:
        stop_process(proc)
        out.close()


def test_register_adds_serve_and_witness() -> None:
    result = CliRunner().invoke(fresh_app(), ["--help"])
    assert result.exit_code == 0
    assert "serve" in result.output
    assert "witness" in result.output
    result = CliRunner().invoke(fresh_app(), ["witness", "--help"])
    assert "serve" in result.output
    assert "keygen" in result.output


def test_usage_errors(tmp_path: Path) -> None:
    app = fresh_app()
    bad_listen = CliRunner().invoke(
        app, ["serve", "--log", str(tmp_path), "--writers", "w", "--listen", "nowhere"]
    )
    assert bad_listen.exit_code == 2
    missing = CliRunner().invoke(
        app, ["serve", "--log", str(tmp_path), "--writers", str(tmp_path / "none")]
    )
    assert missing.exit_code == 1
    assert "token file" in missing.output


def test_witness_keygen_writes_a_private_key_and_prints_the_vkey(tmp_path: Path) -> None:
    key = tmp_path / "witness.key"
    result = CliRunner().invoke(
        fresh_app(), ["witness", "keygen", "--name", "w.example/1", "--key", str(key)]
    )
    assert result.exit_code == 0, result.output
    assert CosignatureVerifier.from_vkey(result.output.strip()).name == "w.example/1"
    assert key.stat().st_mode & 0o777 == 0o600
    again = CliRunner().invoke(
        fresh_app(), ["witness", "keygen", "--name", "w.example/1", "--key", str(key)]
    )
    assert again.exit_code == 1


def test_serve_end_to_end(tmp_path: Path, event: MakeEvent) -> None:
    key = tmp_path / "log.key"
    signer = generate_key_file(key, ORIGIN)
    AuditLog.create(tmp_path / "log", ORIGIN, signer).close()
    writers = tmp_path / "writers"
    writers.write_text(f"{token_digest(TOKEN)} operator\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve", "--log", str(tmp_path / "log"), "--writers", str(writers)]
    args += ["--key", str(key), "--listen", f"127.0.0.1:{port}"]
    with running(args, f"{url}/healthz", tmp_path):
        with AuditClient(url, TOKEN, verifiers=[signer.verifier]) as client:
            assert client.append([event(1), event(2)]) == [0, 1]
            assert client.prove(1).startswith(b"c2sp.org/tlog-proof@v1\n")
        assert httpx.get(f"{url}/v1/checkpoint").status_code == 401
    assert b"\n2\n" in (tmp_path / "log" / "checkpoint").read_bytes()
    assert TOKEN not in (tmp_path / "server.log").read_text()


def test_witness_serve_end_to_end(tmp_path: Path) -> None:
    key = tmp_path / "witness.key"
    vkey = (
        CliRunner()
        .invoke(fresh_app(), ["witness", "keygen", "--name", "w.example/1", "--key", str(key)])
        .output.strip()
    )
    from audit.note import Signer

    log_key = Signer.generate(ORIGIN)
    port = free_port()
    args = ["witness", "serve", "--state", str(tmp_path / "state"), "--key", str(key)]
    args += ["--vkey", log_key.verifier.vkey, "--listen", f"127.0.0.1:{port}"]
    url = f"http://127.0.0.1:{port}/add-checkpoint"
    with running(args, url, tmp_path):
        cp = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), [log_key])
        r = httpx.post(url, content=b"old 0\n\n" + cp)
        assert r.status_code == 200, r.text
        assert CosignatureVerifier.from_vkey(vkey).verify_note(cp + r.content) > 0
    assert list((tmp_path / "state").glob("*.checkpoint"))
