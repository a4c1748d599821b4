"""A real MinIO server for tests and benchmarks, on free loopback ports.

``with running_minio(directory) as s3:`` starts the pinned MinIO binary built by
``tools/`` with random root credentials, waits (bounded) until it is ready and stops it
afterwards. The credentials are only in the returned :class:`MinioServer`, never logged.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from sandbox.devenv.processes import free_port, log_tail
from sandbox.devenv.toolchain import tool_path
from sandbox.errors import ControlPlaneError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["MinioServer", "running_minio"]


@dataclass(frozen=True)
class MinioServer:
    """A running MinIO."""

    endpoint: str
    """``http://127.0.0.1:PORT``."""
    access_key: str
    """Root user."""
    secret_key: str = field(repr=False)
    """Root password (kept out of reprs)."""

    def client(self) -> S3Client:
        """A boto3 S3 client with the root credentials."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(
                s3={"addressing_style": "path"},
                max_pool_connections=32,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )


def _ready(endpoint: str) -> bool:
    try:
        return httpx.get(f"{endpoint}/minio/health/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def running_minio(
    directory: Path, timeout: float = 60.0, host: str = "127.0.0.1"
) -> Iterator[MinioServer]:
    """Run MinIO with its data and log in ``directory`` for the duration of the block.

    It listens on ``host`` (loopback unless told otherwise, e.g. the host end of the
    local node's link so pods can be shown not to reach it).
    """
    binary = tool_path("minio")
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    port, console = free_port(), free_port()
    user, password = "regsandbox", secrets.token_hex(16)
    env = {
        **os.environ,
        "MINIO_ROOT_USER": user,
        "MINIO_ROOT_PASSWORD": password,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
    }
    log_path = directory / "minio.log"
    endpoint = f"http://{host}:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(binary),
                "server",
                str(data),
                "--quiet",
                "--address",
                f"{host}:{port}",
                "--console-address",
                f"{host}:{console}",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _ready(endpoint):
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"MinIO exited with {proc.returncode}:\n{log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"MinIO not ready after {timeout}s; see {log_path}")
            time.sleep(0.05)
        yield MinioServer(endpoint, user, password)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
