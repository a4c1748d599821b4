"""Servers for tests, started and stopped the same way everywhere.

:func:`serve_app` runs an ASGI app with uvicorn in a thread of the test process;
:func:`wait_healthy` waits for a server process (``sandboxctl … serve``) to answer and
:func:`stop_process` stops one. They listen on 127.0.0.1 only and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from sandbox.devenv.processes import free_port

__all__ = ["answers_200", "serve_app", "stop_process", "wait_healthy"]


@contextlib.contextmanager
def serve_app(app: Any, *, port: int | None = None, what: str = "uvicorn") -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (``port``, or a free one); yield its base URL.

    Raises:
        RuntimeError: the server did not start within 20 s.
    """
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"{what} did not start on 127.0.0.1:{port}")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def answers_200(url: str) -> bool:
    """Whether ``url`` answers 200 now."""
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_healthy(
    proc: subprocess.Popen[bytes], url: str, output: Path, *, timeout: float = 60.0
) -> None:
    """Wait until ``url`` answers 200, as long as ``proc`` (writing to ``output``) runs.

    Raises:
        RuntimeError: the process exited (the message ends with its output).
        TimeoutError: no 200 within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not answers_200(url):
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args!r} exited {proc.returncode}: {output.read_text()[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing answered {url} within {timeout}s")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``proc`` if it still runs, SIGKILL it after 15 s; reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
