"""Dataset gateway: the same reads through the S3 API and through the REST API.

Target (issue 20): reading a 4 KiB and a 256 MiB object through the gateway's S3 API
(boto3, SigV4, credentials from its STS) costs the gateway at most 10 % more CPU per
MiB than the same read through its REST API (bearer token), in the same run.

Everything is real and local, as in ``bench/gateway_throughput.py`` (whose setup this
reuses): a control plane, a MinIO, and ``sandboxctl gateway serve`` in its own process
with an fsync'ing audit log and the STS server key. Both sides read the same objects
with urllib3 (boto3's HTTP stack) and hash every byte; the gateway's CPU is read from
/proc before and after each side.

    .venv/bin/python bench/gateway_s3.py [--big-mib 256] [--small 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import urllib3
from botocore import UNSIGNED
from botocore.config import Config

from sandbox.devenv.minio import running_minio
from sandbox.devenv.operator_process import service_account_kubeconfig
from sandbox.gateway.rbac import GATEWAY_NAME, gateway_rbac
from sandbox.kube.apply import apply
from sandbox.testing import api_client, running_control_plane

MIB = 1024 * 1024


def _throughput_bench() -> ModuleType:
    """``bench/gateway_throughput.py``, whose setup and process helpers this reuses."""
    path = Path(__file__).with_name("gateway_throughput.py")
    spec = importlib.util.spec_from_file_location("gateway_throughput", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _s3_client(url: str, token: str) -> Any:
    sts = boto3.client(
        "sts", endpoint_url=url, region_name="us-east-1", config=Config(signature_version=UNSIGNED)
    )
    creds = sts.assume_role_with_web_identity(
        RoleArn="arn:aws:iam::000000000000:role/bench",
        RoleSessionName="bench",
        WebIdentityToken=token,
    )["Credentials"]
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def _s3_read(s3c: Any, key: str, chunk: int) -> tuple[int, str]:
    body = s3c.get_object(Bucket="bench-data", Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    while data := body.read(chunk):
        digest.update(data)
        size += len(data)
    return size, digest.hexdigest()


def _measure(
    gb: ModuleType, pid: int, count: int, read: Callable[[], tuple[int, str]], expected: str
) -> tuple[float, float, int]:
    """Gateway CPU seconds, wall seconds and bytes of ``count`` reads (each checked)."""
    cpu0, wall0, total = gb._cpu(pid), time.perf_counter(), 0
    for _ in range(count):
        size, digest = read()
        if digest != expected:
            raise SystemExit("a read returned other bytes than the object's")
        total += size
    return gb._cpu(pid) - cpu0, time.perf_counter() - wall0, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=500, help="4 KiB reads per side")
    parser.add_argument("--rounds", type=int, default=3, help="big reads per side")
    args = parser.parse_args()
    gb = _throughput_bench()
    with tempfile.TemporaryDirectory(prefix="gw-s3-bench-") as tmp:
        work = Path(tmp)
        (work / "sts.key").write_text(os.urandom(32).hex())
        os.environ["REGSANDBOX_GATEWAY_STS_KEY_FILE"] = str(work / "sts.key")
        with running_control_plane(work / "cp") as plane, running_minio(work / "minio") as s3:
            admin = api_client(plane.admin_kubeconfig)
            token = gb._setup(admin, s3)
            ns = {"apiVersion": "v1", "kind": "Namespace"}
            apply(admin, {**ns, "metadata": {"name": "regsandbox-system"}})
            for obj in gateway_rbac("regsandbox-system"):
                apply(admin, obj)
            kubeconfig = service_account_kubeconfig(
                admin, "regsandbox-system", work / "gw.kubeconfig", service_account=GATEWAY_NAME
            )
            store = s3.client()
            store.create_bucket(Bucket=gb.BUCKET)
            store.create_bucket(Bucket=gb.OUTBOX)
            big = os.urandom(args.big_mib * MIB)
            small = os.urandom(4096)
            store.put_object(Bucket=gb.BUCKET, Key="data/big.bin", Body=big)
            store.put_object(Bucket=gb.BUCKET, Key="data/small.bin", Body=small)
            sums = {"big.bin": hashlib.sha256(big).hexdigest()}
            sums["small.bin"] = hashlib.sha256(small).hexdigest()
            del big
            proc, url = gb._start_gateway(work, kubeconfig, s3)
            try:
                pool = urllib3.PoolManager()
                s3c = _s3_client(url, token)
                rows = []
                for key, count in (("small.bin", args.small), ("big.bin", args.rounds)):
                    rest_url = f"{url}/v1/datasets/bench-data/objects/{key}"
                    sides = {
                        "REST": lambda u=rest_url: gb._gateway_read(pool, u, token),
                        "S3": lambda k=key: _s3_read(s3c, k, gb.CHUNK),
                    }
                    for side, read in sides.items():
                        read()  # warm: connections, caches
                        cpu, wall, total = _measure(gb, proc.pid, count, read, sums[key])
                        rows.append((key, side, count, cpu, wall, total))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print(f"load average: {gb._load()}")
    head = ("object", "api", "reads", "MiB/s", "gw CPU ms/MiB", "gw CPU ms/read")
    print(f"{head[0]:10} {head[1]:5} {head[2]:>6} {head[3]:>8} {head[4]:>14} {head[5]:>15}")
    per_mib: dict[tuple[str, str], float] = {}
    for key, side, count, cpu, wall, total in rows:
        per_mib[key, side] = cpu / (total / MIB)
        print(
            f"{key:10} {side:5} {count:6d} {total / MIB / wall:8.1f} "
            f"{1000 * per_mib[key, side]:14.2f} {1000 * cpu / count:15.3f}"
        )
    for key in ("small.bin", "big.bin"):
        extra = per_mib[key, "S3"] / per_mib[key, "REST"] - 1
        print(f"{key}: S3 API vs REST, gateway CPU per MiB {100 * extra:+.1f} % (target <= +10 %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
