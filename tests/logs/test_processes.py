"""Real processes log through the shared set-up: ``sandboxctl audit serve`` in a pipe logs
JSON lines, names the request ids it appended, and never its writers' tokens."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from audit.client import AuditClient
from audit.entry import Actor, Event, Resource
from audit.log import AuditLog
from audit.service import token_digest
from audit.signing import generate_key_file
from sandbox.devenv.processes import free_port
from tests.servers import stop_process, wait_healthy

ORIGIN = "audit.regsandbox.test/logs"
TOKEN = "writer-token-4f1e-secret-value"
SANDBOXCTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "sandboxctl"


def _event(n: int, request_id: str | None) -> Event:
    return Event(
        request_id=request_id,
        actor=Actor(service_account="sbx-acme-a/workload"),
        action="dataset.read",
        resource=Resource(kind="Dataset", name="claims", tenant="acme"),
        outcome="success",
        details={"n": n},
    )


@contextmanager
def _audit_service(tmp_path: Path, *root_options: str) -> Iterator[tuple[str, Path, Any]]:
    key = tmp_path / "log.key"
    signer = generate_key_file(key, ORIGIN)
    AuditLog.create(tmp_path / "log", ORIGIN, signer).close()
    writers = tmp_path / "writers"
    writers.write_text(f"{token_digest(TOKEN)} operator\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    output = tmp_path / "stderr.log"
    args = [str(SANDBOXCTL), *root_options, "audit", "serve", "--log", str(tmp_path / "log")]
    args += ["--writers", str(writers), "--key", str(key), "--listen", f"127.0.0.1:{port}"]
    with output.open("wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err)
        try:
            wait_healthy(proc, f"{url}/healthz", output)
            yield url, output, signer
        finally:
            stop_process(proc)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for_line(path: Path, event: str) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = [d for d in _lines(path) if d.get("event") == event]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} line in:\n{path.read_text()}")


def test_the_audit_service_logs_json_with_the_request_ids_it_appended(tmp_path: Path) -> None:
    with _audit_service(tmp_path, "--log-level", "debug") as (url, output, signer):
        with AuditClient(url, TOKEN, verifiers=[signer.verifier]) as client:
            batch = [_event(1, "4be1c0de"), _event(2, "4be1c0de"), _event(3, None)]
            assert client.append(batch) == [0, 1, 2]
            assert client.append([_event(4, "77aa")]) == [3]
        first = _wait_for_line(output, "appended")
    assert (first["request_ids"], first["events"], first["first"]) == (["4be1c0de"], 3, 0)
    assert first["level"] == "info"
    assert first["logger"] == "audit.service"
    lines = _lines(output)  # every line is JSON: its stderr is a file, not a terminal
    assert any(d.get("request_ids") == ["77aa"] for d in lines)
    assert TOKEN not in output.read_text()


def test_console_format_on_request_and_a_bad_format_is_a_usage_error(tmp_path: Path) -> None:
    with _audit_service(tmp_path, "--log-format", "console") as (url, output, signer):
        with AuditClient(url, TOKEN, verifiers=[signer.verifier]) as client:
            client.append([_event(1, "c0ffee")])
        deadline = time.monotonic() + 15
        while "c0ffee" not in output.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
    text = output.read_text()
    assert "appended" in text
    assert "c0ffee" in text
    assert not text.lstrip().startswith("{")
    bad = subprocess.run(
        [
            str(SANDBOXCTL),
            "--log-format",
            "xml",
            "audit",
            "serve",
            "--log",
            str(tmp_path),
            "--writers",
            str(tmp_path / "writers"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2, bad.stderr
    assert "log format 'xml'" in bad.stderr


def test_a_bad_level_is_a_usage_error(tmp_path: Path) -> None:
    bad = subprocess.run(
        [
            str(SANDBOXCTL),
            "--log-level",
            "loud",
            "audit",
            "serve",
            "--log",
            str(tmp_path),
            "--writers",
            str(tmp_path / "w"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2, bad.stderr
    assert "log level 'loud'" in bad.stderr
