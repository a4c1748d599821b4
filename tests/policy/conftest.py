"""Fixtures for the policy tests: the shipped policy set, engines, a real OPA server."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sandbox.policy import EmbeddedEngine, OpaEngine, PolicySet

OPA_VERSION = "v1.22.3"
REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "policies"
EXAMPLES = REPO / "examples"


def opa_path() -> Path:
    """Where ``make tools`` puts the pinned OPA binary (``REGSANDBOX_BIN_DIR`` overrides)."""
    default = Path.home() / ".cache" / "regsandbox" / "bin"
    return Path(os.environ.get("REGSANDBOX_BIN_DIR", default)) / f"opa-{OPA_VERSION}"


@pytest.fixture(scope="session")
def opa_binary() -> Path:
    """The pinned OPA binary; the test fails (not skips) when it is missing."""
    path = opa_path()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"OPA binary {path} is missing: run `make tools` to build it", pytrace=False)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def opa_url(opa_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OPA server on a free loopback port, for the whole session."""
    yield from run_opa(opa_binary, tmp_path_factory)


@pytest.fixture(scope="module")
def own_opa_url(opa_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OPA server for one test module, for tests that change what it holds."""
    yield from run_opa(opa_binary, tmp_path_factory)


def run_opa(opa_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``opa run --server`` on a free loopback port, yield its URL, stop it."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("opa") / "opa.log").open("wb")
    process = subprocess.Popen(
        [str(opa_binary), "run", "--server", "--addr", f"127.0.0.1:{port}", "--log-level", "error"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"OPA server did not start on {url}", pytrace=False)
        time.sleep(0.1)
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="session")
def policy_set() -> PolicySet:
    """The policies shipped in ``policies/``."""
    return PolicySet.from_directory(POLICY_DIR)


@pytest.fixture(scope="session")
def embedded(policy_set: PolicySet) -> EmbeddedEngine:
    """An embedded engine with the shipped policies."""
    return EmbeddedEngine(policy_set)


@pytest.fixture(scope="session")
def opa(opa_url: str, policy_set: PolicySet) -> Iterator[OpaEngine]:
    """An OPA engine with the shipped policies pushed to the session's server."""
    engine = OpaEngine(opa_url, policy_set, timeout=5.0)
    yield engine
    engine.close()
