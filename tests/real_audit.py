"""The real audit service as a process the fault-injection tests can stop and bring back.

``sandboxctl audit serve`` runs exactly as the chart runs it (a separate process, a
writer token file, a signing key), on a fixed 127.0.0.1 port so that clients configured
with its URL reach it again once it is back. Every wait is a bounded poll.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from audit.entry import Entry
from audit.log import AuditLog, LogReader
from audit.signing import generate_key_file
from sandbox.devenv.processes import free_port
from tests.servers import answers_200, serve_app, stop_process, wait_healthy

__all__ = ["KillOnAppend", "RealAuditService"]


class RealAuditService:
    """A ``sandboxctl audit serve`` process over a log of its own, under ``directory``."""

    def __init__(self, directory: Path, origin: str, writer: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "log"
        self.key = directory / "signing.key"
        self.signer = generate_key_file(self.key, origin)
        AuditLog.create(self.log, origin, self.signer).close()
        self.token = secrets.token_urlsafe(32)
        """The writer's bearer token (its SHA-256 is all the service keeps)."""
        self.token_file = directory / "writer.token"
        self.token_file.write_text(self.token)
        self.token_file.chmod(0o600)
        self.writers = directory / "writers"
        self.writers.write_text(f"{hashlib.sha256(self.token.encode()).hexdigest()} {writer}\n")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = directory / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> RealAuditService:
        """Start the service and wait until ``/healthz`` answers 200."""
        args = [
            sys.executable,
            "-m",
            "sandbox.cli",
            "audit",
            "serve",
            f"--log={self.log}",
            f"--key={self.key}",
            f"--writers={self.writers}",
            f"--listen=127.0.0.1:{self.port}",
            "--open-reads",
        ]
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        wait_healthy(self.proc, f"{self.url}/healthz", self.output, timeout=timeout)
        return self

    def healthy(self) -> bool:
        """Whether ``/healthz`` answers 200 now."""
        return answers_200(f"{self.url}/healthz")

    def kill(self) -> None:
        """SIGKILL the service, as a crash or an evicted pod would, and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=15)

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections, nothing answers (a hung node)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the service (SIGTERM, then SIGKILL) if it runs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)
        stop_process(self.proc)

    def entries(self, minimum: int = 0, timeout: float = 30.0) -> list[Entry]:
        """Every entry as of the latest checkpoint, once that covers ``minimum`` entries.

        The service signs a checkpoint within a second of an append, so a bounded poll.
        """
        deadline = time.monotonic() + timeout
        while True:
            with LogReader(self.log) as reader:
                if reader.size >= minimum:
                    return [reader.entry(i) for i in range(reader.size)]
            if time.monotonic() > deadline:
                raise TimeoutError(f"the log never reached {minimum} checkpointed entries")
            time.sleep(0.1)


class KillOnAppend:
    """An HTTP proxy in front of a :class:`RealAuditService` that kills it on cue.

    Everything is forwarded as it is, until an append whose body contains
    :attr:`trigger` arrives: then the service is killed *before* the append reaches it,
    and the client gets 502 as from a load balancer with no backend. This places a real
    crash at an exact step of a client's protocol (for example between an export's copy
    and its ``released`` record), which no timing from outside could.
    """

    def __init__(self, service: RealAuditService) -> None:
        self.service = service
        self.trigger: bytes | None = None
        """Body fragment that fires the kill (once); None: forward everything."""
        self.fired = threading.Event()
        """Set once the service was killed on cue."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._serving = contextlib.ExitStack()

    async def _forward(self, request: Request) -> Response:
        body = await request.body()
        if self.trigger is not None and self.trigger in body and request.method == "POST":
            self.trigger = None
            await anyio.to_thread.run_sync(self.service.kill)
            self.fired.set()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        target = f"{self.service.url}{request.url.path}"
        try:
            async with httpx.AsyncClient(timeout=10.0) as upstream:
                answer = await upstream.request(
                    request.method,
                    target,
                    params=request.query_params,
                    content=body,
                    headers=headers,
                )
        except httpx.HTTPError as exc:
            return Response(f"no audit service: {exc}", status_code=502)
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    def __enter__(self) -> KillOnAppend:
        app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._forward,
                    methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"],
                )
            ]
        )
        self._serving.enter_context(serve_app(app, port=self.port, what="the proxy"))
        return self

    def __exit__(self, *exc: object) -> None:
        self._serving.close()
