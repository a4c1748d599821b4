"""Hostile input to the audit service: deep JSON, endless chunked bodies, binary key files.

The body cases run against the real service (uvicorn on loopback) with a raw socket, so
what is measured is what the server reads, not what a client library chose to send.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from audit.errors import MalformedError
from audit.log import AuditLog
from audit.service import AccessPolicy, create_app, load_tokens, token_digest
from audit.signing import generate_key_file, load_signer, load_verifier
from audit.witness import MAX_BODY_BYTES as WITNESS_MAX_BODY
from audit.witness import Cosigner, FileWitnessState, Witness, witness_app
from sandbox.cli.audit import app as audit_app
from sandbox.cli.audit_serve import register

from .conftest import ORIGIN, make_event

TOKEN = "input-writer-token-0123456789"
LIMIT = 256 * 1024
BINARY = b"\x30\x82\x01\x0a\xff\xfe\x00 not a key"


@pytest.fixture
def url(audit_log: AuditLog, serve: Callable[..., Any]) -> Iterator[str]:
    policy = AccessPolicy(writers={token_digest(TOKEN): "operator"}, readers={})
    with serve(create_app(audit_log, policy, max_body_bytes=LIMIT)) as base:
        yield base


def _post(url: str, content: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    return httpx.post(f"{url}/v1/entries", content=content, headers=headers, timeout=30)


# -- JSON nested very deep -----------------------------------------------------------------


def test_json_nested_far_too_deep_is_400_not_500(url: str, audit_log: AuditLog) -> None:
    depth = 100_000
    response = _post(url, b'{"events": ' + b"[" * depth + b"]" * depth + b"}")
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.json()["detail"]
    assert audit_log.size == 0


@pytest.mark.parametrize("depth", [200, 400, 800, 990])
def test_event_details_nested_deep_are_refused_or_logged_never_500(
    url: str, audit_log: AuditLog, depth: int
) -> None:
    event = make_event(1).model_dump(mode="json")
    raw = httpx.Request("POST", "/", json={"events": [event]}).content
    nested = b'{"x": ' * depth + b"1" + b"}" * depth
    body = raw.replace(b'"details":{"n":1}', b'"details":{"n":' + nested + b"}")
    assert body != raw
    response = _post(url, body)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code == 200:
        [index] = response.json()["indices"]
        assert audit_log.entry(index).details["n"] is not None
    else:
        assert audit_log.size == 0
    assert httpx.get(f"{url}/healthz").status_code == 200


# -- bodies larger than the limit -----------------------------------------------------------


def _send_chunked_until_answered(
    url: str, cap: int, path: str = "/v1/entries", auth: bool = True
) -> tuple[int, bytes]:
    """Stream an endless chunked append; stop when the server answers or ``cap`` is sent.

    Returns the bytes of body sent and what the server answered (empty if nothing).
    """
    host, port = url.removeprefix("http://").split(":")
    chunk = b"[" * 16384
    frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: audit\r\n".encode()
            + (f"Authorization: Bearer {TOKEN}\r\n".encode() if auth else b"")
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        while sent < cap:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(frame)
            except OSError:  # the server answered and closed while we were writing
                break
            sent += len(chunk)
        answer = b""
        deadline = time.monotonic() + 10
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
                readable, _, _ = select.select([sock], [], [], 0.5)
                if readable:
                    data = sock.recv(65536)
                    if not data:
                        break
                    answer += data
    return sent, answer


def test_an_endless_chunked_body_is_cut_at_the_limit_with_413(
    url: str, audit_log: AuditLog
) -> None:
    cap = 400 * LIMIT  # 100 MiB: a server that buffers until the end never answers
    sent, answer = _send_chunked_until_answered(url, cap)
    assert answer.startswith(b"HTTP/1.1 413"), (sent, answer[:200])
    assert sent < cap
    assert audit_log.size == 0
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_the_witness_cuts_an_endless_chunked_body_too(
    tmp_path: Path, serve: Callable[..., Any]
) -> None:
    state = FileWitnessState(tmp_path / "witness")
    witness = Witness(Cosigner.generate("w.example/1"), {}, state)
    try:
        with serve(witness_app(witness)) as base:
            cap = 400 * WITNESS_MAX_BODY
            sent, answer = _send_chunked_until_answered(base, cap, "/add-checkpoint", auth=False)
            assert answer.startswith(b"HTTP/1.1 413"), (sent, answer[:200])
            assert sent < cap
    finally:
        state.close()


def test_a_declared_length_over_the_limit_is_413_before_reading(url: str) -> None:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/entries HTTP/1.1\r\nHost: audit\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + f"Content-Length: {LIMIT + 1}\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")


def test_a_body_at_the_limit_is_read(url: str, audit_log: AuditLog) -> None:
    event = make_event(1).model_dump(mode="json")
    body = httpx.Request("POST", "/", json={"events": [event]}).content
    padded = body + b" " * (LIMIT - len(body))
    assert len(padded) == LIMIT
    assert _post(url, padded).status_code == 200
    assert _post(url, padded + b" ").status_code == 413
    assert audit_log.size == 1


# -- key and token files that are not UTF-8 -------------------------------------------------


def test_binary_key_files_give_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(BINARY)
    for load in (load_signer, load_verifier, load_tokens):
        with pytest.raises(MalformedError, match=f"{path} is not UTF-8 text"):
            load(path)  # type: ignore[operator]


def test_sandboxctl_names_a_binary_key_file_without_a_traceback(tmp_path: Path) -> None:
    good = tmp_path / "log.key"
    signer = generate_key_file(good, ORIGIN)
    AuditLog.create(tmp_path / "log", ORIGIN, signer).close()
    binary = tmp_path / "binary.key"
    binary.write_bytes(BINARY)
    writers = tmp_path / "writers"
    writers.write_text(f"{token_digest(TOKEN)} operator\n")
    witness_key = tmp_path / "witness.key"
    witness_key.write_text(Cosigner.generate("w.example/1").private_key + "\n")
    serve_app = typer.Typer()
    register(serve_app)
    log, w = str(tmp_path / "log"), str(witness_key)
    vkey, bad = signer.verifier.vkey, str(binary)
    runs = [
        (serve_app, ["serve", "--log", log, "--writers", str(writers), "--key", bad]),
        (serve_app, ["serve", "--log", log, "--writers", bad]),
        (
            serve_app,
            ["witness", "serve", "--state", str(tmp_path / "w"), "--key", bad, "--vkey", vkey],
        ),
        (
            serve_app,
            ["witness", "serve", "--state", str(tmp_path / "w2"), "--key", w, "--vkey", bad],
        ),
        (audit_app, ["verify", "--log", log, "--vkey", bad]),
    ]
    for app, args in runs:
        result = CliRunner().invoke(app, args)
        assert result.exit_code in (1, 3), (args, result.output)
        assert str(binary) in result.output, (args, result.output)
        assert "not UTF-8" in result.output, (args, result.output)
        assert not isinstance(result.exception, UnicodeDecodeError), args
        assert "Traceback" not in result.output
