"""Benchmark the three key providers: 200 sandboxes' keys created, then destroyed.

    .venv/bin/python bench/key_providers.py [--sandboxes 200] [--workers 16] [--store secrets]

Each provider runs in the same process and the same run, over the backend the operator
uses: ``local`` and ``pkcs11`` keep wrapped keys in Secrets on a real local control plane
(``--store file`` uses a directory instead, without a control plane), ``pkcs11`` talks
to a SoftHSM2 token initialised for the run, ``aws-kms`` to a moto server over HTTP on
127.0.0.1. For each provider:

1. ``create`` of each sandbox's key one after another: p50, p99 and total;
2. ``destroy`` of each, one after another (with the provider's confirmation): p50, p99,
   total;
3. the same 200 creates and then destroys from ``--workers`` threads at once (the
   operator's handler threads): wall time of each phase.

moto is not KMS: its latency says nothing about a real KMS endpoint (tens of ms per
call across a network); the figure is the provider's own overhead.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import boto3
import structlog
from moto.server import ThreadedMotoServer
from pydantic import SecretStr

from sandbox.devenv.controlplane import ControlPlane
from sandbox.keys import (
    AwsKmsKeyProvider,
    AwsKmsSettings,
    FileWrappedKeyStore,
    KeyProvider,
    LocalKeyProvider,
    Pkcs11KeyProvider,
    Pkcs11Settings,
    WrappedKeyStore,
    generate_kek,
)
from sandbox.keys.secret_store import SecretWrappedKeyStore
from sandbox.kube.apply import apply
from sandbox.testing import api_client

REGION = "eu-west-1"
SOFTHSM_MODULE = Path(os.environ.get("SOFTHSM2_MODULE", "/usr/lib/softhsm/libsofthsm2.so"))
TOKEN = "bench"  # noqa: S105 - a token label
PIN = "bench-user-pin"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def _softhsm(directory: Path) -> Iterator[Pkcs11Settings]:
    util = shutil.which("softhsm2-util")
    if util is None or not SOFTHSM_MODULE.is_file():
        raise SystemExit("SoftHSM2 is needed: install the Debian package softhsm2")
    tokens = directory / "tokens"
    tokens.mkdir(mode=0o700)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [util, "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "so-pin"],
        check=True,
        capture_output=True,
    )
    yield Pkcs11Settings(module=SOFTHSM_MODULE, token_label=TOKEN, pin=SecretStr(PIN))


@contextmanager
def _moto() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _timed(call: Callable[[str], object], ids: list[str]) -> list[float]:
    seconds = []
    for sid in ids:
        start = time.perf_counter()
        call(sid)
        seconds.append(time.perf_counter() - start)
    return seconds


def _parallel(call: Callable[[str], object], ids: list[str], workers: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(call, ids))
    return time.perf_counter() - start


def _row(name: str, what: str, seconds: list[float]) -> str:
    return (
        f"| {name} | {what} | {statistics.median(seconds) * 1000:.1f} ms | "
        f"{_percentile(seconds, 0.99) * 1000:.1f} ms | {sum(seconds):.2f} s |"
    )


def _bench(name: str, provider: KeyProvider, count: int, workers: int, prefix: str) -> list[str]:
    ids = [f"{prefix}-{name}-{i:04d}" for i in range(count)]

    def create(sid: str) -> object:
        return provider.create(sid, REGION, {"regsandbox.io/tenant": "bench"})

    def destroy(sid: str) -> object:
        destruction = provider.destroy(sid)
        assert destruction.confirmation, f"{name} gave no confirmation"
        return destruction

    made = _timed(create, ids)
    gone = _timed(destroy, ids)
    parallel_ids = [f"{sid}-p" for sid in ids]
    made_parallel = _parallel(create, parallel_ids, workers)
    gone_parallel = _parallel(destroy, parallel_ids, workers)
    return [
        _row(name, "create, one after another", made),
        _row(name, "destroy, one after another", gone),
        f"| {name} | create, {workers} threads | — | — | {made_parallel:.2f} s |",
        f"| {name} | destroy, {workers} threads | — | — | {gone_parallel:.2f} s |",
    ]


def main() -> None:
    """Run the benchmark and print Markdown rows."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sandboxes", type=int, default=200)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--store", choices=["secrets", "file"], default="secrets")
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(30)  # warnings and worse
    )
    prefix = f"b{int(time.time()) % 100000}"
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        plane: ControlPlane | None = None
        try:
            if args.store == "secrets":
                plane = ControlPlane(tmp / "cp")
                plane.up()
                api = api_client(plane.admin_kubeconfig)
                namespace = "regsandbox-system"
                apply(
                    api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
                )

                def store(kind: str) -> WrappedKeyStore:
                    return SecretWrappedKeyStore(api, namespace)
            else:

                def store(kind: str) -> WrappedKeyStore:
                    return FileWrappedKeyStore(tmp / kind)

            rows: list[str] = []
            with _softhsm(tmp) as hsm, _moto() as endpoint:
                session = boto3.Session(
                    aws_access_key_id="bench",
                    aws_secret_access_key="bench",  # noqa: S106 - moto accepts any
                )
                providers: list[tuple[str, KeyProvider]] = [
                    ("local", LocalKeyProvider(generate_kek(), store("local"))),
                    (
                        "aws-kms",
                        AwsKmsKeyProvider(
                            AwsKmsSettings(regions=(REGION,), endpoint_url=endpoint),
                            session=session,
                        ),
                    ),
                    ("pkcs11", Pkcs11KeyProvider(hsm, store("pkcs11"))),
                ]
                started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
                for name, provider in providers:
                    rows.extend(_bench(name, provider, args.sandboxes, args.workers, prefix))
            load = os.getloadavg()
            print(
                f"{args.sandboxes} sandboxes, store {args.store}, started {started} UTC, "
                f"{os.cpu_count()} cores, {platform.python_version()}, "
                f"load average {load[0]:.1f} / {load[1]:.1f}"
            )
            print("| provider | step | p50 | p99 | total |")
            print("|---|---|---|---|---|")
            print("\n".join(rows))
        finally:
            if plane is not None:
                plane.down()


if __name__ == "__main__":
    main()
