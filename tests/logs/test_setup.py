"""One log set-up for every process (:mod:`sandbox.logs`): JSON in a cluster or a pipe,
readable on a terminal, the standard library's lines rendered alike, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import structlog

from sandbox.logs import REDACTED, configure_logging, resolve_format


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_json_in_a_pipe_and_in_a_cluster_and_readable_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("REGSANDBOX_LOG_FORMAT", raising=False)
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("auto", _Terminal()) == "console"
    assert resolve_format("json", _Terminal()) == "json"
    assert resolve_format("console", io.StringIO()) == "console"
    monkeypatch.setenv("REGSANDBOX_LOG_FORMAT", "json")
    assert resolve_format("auto", _Terminal()) == "json"
    monkeypatch.delenv("REGSANDBOX_LOG_FORMAT")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert resolve_format("auto", _Terminal()) == "json"
    with pytest.raises(ValueError, match="log format 'xml'"):
        resolve_format("xml")


def test_an_unknown_level_is_refused(restore_logging: None) -> None:
    with pytest.raises(ValueError, match="log level 'LOUD'"):
        configure_logging("LOUD", stream=io.StringIO())


def test_structlog_and_standard_library_lines_are_the_same_json(restore_logging: None) -> None:
    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    structlog.get_logger("regsandbox.gateway").info("refused", status=403, request_id="r1")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    logging.getLogger("kubernetes.client.rest").debug("response body: {'token': 'x'}")
    ours, uvicorn = (json.loads(line) for line in out.getvalue().splitlines())
    assert ours["event"] == "refused"
    assert (ours["status"], ours["request_id"], ours["level"]) == (403, "r1", "info")
    assert ours["logger"] == "regsandbox.gateway"
    assert ours["timestamp"].endswith("Z")
    assert uvicorn["event"] == "Invalid HTTP request received."
    assert (uvicorn["logger"], uvicorn["level"]) == ("uvicorn.error", "warning")


def test_the_kubernetes_client_never_logs_below_warning_even_at_debug(
    restore_logging: None,
) -> None:
    # Its DEBUG lines print response bodies, and a TokenReview's echoes the token.
    out = io.StringIO()
    configure_logging("DEBUG", "json", stream=out)
    logging.getLogger("kubernetes.client.rest").debug("response body: token-in-body-5521")
    logging.getLogger("urllib3.connectionpool").debug("headers: token-in-header-5521")
    structlog.get_logger("x").debug("ours at debug")
    assert "5521" not in out.getvalue()
    assert "ours at debug" in out.getvalue()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_values_under_secret_names_are_redacted(restore_logging: None, fmt: str) -> None:
    out = io.StringIO()
    configure_logging("INFO", fmt, stream=out)
    structlog.get_logger("t").info(
        "login",
        token="tok-8812",
        Authorization="Bearer tok-8813",
        session_cookie="c-8814",
        pin="8815",
        writer={"name": "operator", "token": "tok-8816"},
        password="",
        request_id="r-1",
    )
    text = out.getvalue()
    for secret in ("8812", "8813", "8814", "8815", "8816"):
        assert secret not in text
    assert REDACTED in text
    assert "r-1" in text
    assert "operator" in text
    if fmt == "json":
        line = json.loads(text)
        assert line["writer"] == {"name": "operator", "token": REDACTED}
        assert line["password"] == ""  # nothing to hide: left as it is


def test_the_console_renderer_on_a_real_terminal(tmp_path: os.PathLike[str]) -> None:
    # A process whose stderr is a pty (a terminal): auto picks the readable renderer.
    code = (
        "import structlog; from sandbox.logs import configure_logging; "
        "configure_logging('INFO'); "
        "structlog.get_logger('regsandbox.gateway').info('refused', status=403)"
    )
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST",)}
    env.pop("REGSANDBOX_LOG_FORMAT", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    text = _read_all(primary, proc)
    assert proc.returncode == 0, text
    assert "refused" in text
    assert "status" in text
    assert "403" in text
    assert not text.lstrip().startswith("{"), text


def _read_all(fd: int, proc: subprocess.Popen[bytes]) -> str:
    chunks: list[bytes] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")
