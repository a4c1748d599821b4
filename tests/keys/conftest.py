"""Fixtures shared by the key-provider tests: a real SoftHSM2 token in a temporary directory."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from moto.server import ThreadedMotoServer
from pkcs11 import exceptions as p11
from pydantic import SecretStr

from sandbox.devenv.operator_process import OperatorProcess
from sandbox.keys import Pkcs11Settings
from tests.lifecycle.conftest import (  # noqa: F401 - the operator-crash tests use these
    audit_dir,
    crds,
    operator_env,
    operator_kubeconfig,
    tenant_factory,
)

SOFTHSM_MODULE = Path(os.environ.get("SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so"))
TOKEN_LABEL = "regsandbox-test"
OTHER_TOKEN_LABEL = "regsandbox-other"
PIN_TOKEN_LABEL = "regsandbox-pin"
"""A token only the wrong-PIN test opens (login state is per process)."""
USER_PIN = "4711-user-pin"
SO_PIN = "0815-so-pin"
PINS = ("--pin", USER_PIN, "--so-pin", SO_PIN)


@dataclass(frozen=True)
class SoftHsm:
    """A SoftHSM2 installation initialised for this test session."""

    module: Path
    conf: Path
    tokendir: Path

    def settings(self, token_label: str = TOKEN_LABEL, pin: str = USER_PIN) -> Pkcs11Settings:
        """Provider settings for one of this session's tokens."""
        return Pkcs11Settings(module=self.module, token_label=token_label, pin=SecretStr(pin))

    @contextmanager
    def session(self, token_label: str = TOKEN_LABEL) -> Iterator[Any]:
        """A logged-in session of the test process itself, to look at the token without
        the provider (whose session lives in its worker process)."""
        token = pkcs11.lib(str(self.module)).get_token(token_label=token_label)
        try:
            session = token.open(rw=True, user_pin=USER_PIN)
        except p11.UserAlreadyLoggedIn:  # login belongs to the process: an earlier test's
            session = token.open(rw=True)
        with session:
            yield session


def _missing(what: str) -> None:
    message = (
        f"SoftHSM2 is needed for the pkcs11 key-provider tests but {what}; "
        "install the Debian package softhsm2 (make deps does)"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """Three SoftHSM2 tokens (``regsandbox-test``, ``-other`` and ``-pin``) in a tmp dir.

    ``SOFTHSM2_CONF`` is set for the whole session: SoftHSM2 reads it when the module is
    first initialised, and python-pkcs11 keeps the module loaded for the process.
    Without SoftHSM2 the tests fail under ``CI=true`` and are skipped elsewhere.
    """
    util = shutil.which("softhsm2-util")
    if util is None:
        _missing("softhsm2-util is not on PATH")
    if not SOFTHSM_MODULE.is_file():
        _missing(f"its PKCS#11 module {SOFTHSM_MODULE} does not exist")
    assert util is not None
    root = tmp_path_factory.mktemp("softhsm")
    tokendir = root / "tokens"
    tokendir.mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        for label in (TOKEN_LABEL, OTHER_TOKEN_LABEL, PIN_TOKEN_LABEL):
            subprocess.run(
                [util, "--init-token", "--free", "--label", label, *PINS],
                check=True,
                capture_output=True,
                env={**os.environ, "SOFTHSM2_CONF": str(conf)},
            )
        yield SoftHsm(module=SOFTHSM_MODULE, conf=conf, tokendir=tokendir)
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture(scope="session")
def moto_kms_endpoint() -> Iterator[str]:
    """A moto server (real HTTP KMS API) on 127.0.0.1 for the contract tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def start_operator(
    operator_kubeconfig: Path,  # noqa: F811 - the fixture imported above
    audit_dir: tuple[Path, Path],  # noqa: F811
    tmp_path: Path,
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operators with extra settings; every one is stopped at the end."""
    started: list[OperatorProcess] = []

    def start(**env: str) -> OperatorProcess:
        proc = OperatorProcess(
            operator_kubeconfig,
            operator_env(audit_dir, **env),
            tmp_path / f"operator-{len(started)}.log",
        )
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.stop()
