"""Fixtures for the audit service, client, witness and archive tests.

Servers listen on 127.0.0.1 free ports only and every wait is a bounded loop.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from audit.entry import Actor, Event, Resource
from audit.log import AuditLog
from audit.note import Signer
from audit.read_server import PublishedLog, create_read_app
from audit.service import AccessPolicy, create_app
from sandbox.devenv.processes import free_port as free_port  # the tests import it here
from tests.servers import serve_app

ORIGIN = "audit.regsandbox.test/log"


def wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll ``check`` until it is true, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200."""
    return httpx.get(url, timeout=1.0).status_code == 200


@contextlib.contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread; yield its base URL."""
    with serve_app(app) as url:
        yield url


LAYOUTS = ("writer", "read-server")
"""Where reads are served: the writer's own listener, or the read server over the files."""


@contextlib.contextmanager
def serving_reads(layout: str, log: AuditLog, policy: AccessPolicy) -> Iterator[str]:
    """Serve ``log``'s reads under ``policy`` as ``layout`` says; yield the base URL.

    ``read-server`` is :func:`audit.read_server.create_read_app` over the log's durable
    files (what ``audit serve --read-listen`` runs in its read process); it sees what
    ``log`` publishes (``publish_checkpoint``).
    """
    if layout == "writer":
        with serving(create_app(log, policy)) as url:
            yield url
        return
    published = PublishedLog(log.path)
    try:
        with serving(create_read_app(published, policy)) as url:
            yield url
    finally:
        published.close()


def make_event(n: int = 0, *, action: str = "dataset.read") -> Event:
    """A small valid event."""
    return Event(
        actor=Actor(service_account="sbx-acme-a/workload", pod="sbx-acme-a/train-0"),
        action=action,
        resource=Resource(kind="Dataset", name=f"claims-{n}", tenant="acme"),
        outcome="success",
        details={"n": n},
    )


Serve = Callable[[Starlette], contextlib.AbstractContextManager[str]]


@pytest.fixture
def serve() -> Serve:
    """``with serve(app) as url:`` runs ``app`` on a free local port."""
    return serving


@pytest.fixture
def event() -> Callable[..., Event]:
    """``event(n)`` makes a small valid event."""
    return make_event


@pytest.fixture
def signer() -> Signer:
    """A fresh log key named after :data:`ORIGIN`."""
    return Signer.generate(ORIGIN)


@pytest.fixture
def audit_log(tmp_path: Path, signer: Signer) -> Iterator[AuditLog]:
    """A new, empty log open for writing."""
    log = AuditLog.create(tmp_path / "log", ORIGIN, signer, checkpoint_interval=0.05)
    try:
        yield log
    finally:
        log.close()


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server."""

    endpoint: str
    access_key: str
    secret_key: str


@pytest.fixture(scope="session")
def minio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real MinIO server built by tools/, on free local ports; fails if not built."""
    from sandbox.devenv.minio import running_minio
    from sandbox.devenv.toolchain import tool_path
    from sandbox.errors import SandboxError

    try:
        tool_path("minio")
    except SandboxError as exc:
        pytest.fail(f"MinIO is needed for the s3 tests: {exc}")
    with running_minio(tmp_path_factory.mktemp("minio")) as server:
        yield S3Server(server.endpoint, server.access_key, server.secret_key)
