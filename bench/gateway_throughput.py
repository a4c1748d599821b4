"""Dataset gateway: throughput, added latency and memory against a direct S3 read.

Targets (issue 6):

- a 256 MiB object read through the gateway reaches >= 0.7x the throughput of a direct
  boto3 GET from the same MinIO in the same run;
- 4 KiB objects: p99 latency added by the gateway <= 10 ms (TokenReview cached, audit
  append with fsync included);
- the gateway's RSS stays flat while streaming.

Also measured (issue 12, no target yet): writing an artifact of the same size into the
sandbox's outbox through the gateway (``PUT /v1/outbox/<path>``, multipart, audited)
against one direct boto3 ``PutObject`` of the same bytes, and the gateway's RSS while
it takes the upload.

Everything is real and local: a control plane (etcd, kube-apiserver, controllers), a
MinIO, and the gateway started through ``sandboxctl gateway serve`` in its own process
as its least-privilege ServiceAccount, writing an fsync'ing audit log. Next to the
throughputs it prints the CPU each process (MinIO, gateway, this client) spent per MiB on
each side, and the load average: all three share the same cores, so where the cycles go
decides the ratio.

    .venv/bin/python bench/gateway_throughput.py [--big-mib 256] [--small N] [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import urllib3
from kubernetes import client

from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.minio import MinioServer, running_minio
from sandbox.devenv.operator_process import service_account_kubeconfig
from sandbox.devenv.processes import free_port
from sandbox.gateway import AUDIENCE
from sandbox.gateway.rbac import GATEWAY_NAME, gateway_rbac
from sandbox.kube.apply import apply
from sandbox.provision.names import LABEL_SANDBOX, LABEL_TENANT
from sandbox.testing import api_client, install_crds, running_control_plane

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "bench"
OUTBOX = "bench-outbox"
TENANT = "bench"
NS = "sbx-bench-run"
CHUNK = 4 * 1024 * 1024


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _child_pid(name: str) -> int:
    """Pid of this process's child whose command line mentions ``name``."""
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat[1] == me and name.encode() in cmdline:
            return int(entry.name)
    raise SystemExit(f"no child process named {name}")


def _load() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    return f"{os.getloadavg()[0]:.2f}"


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _setup(admin: client.ApiClient, s3: MinioServer) -> str:
    """Dataset, sandbox (Ready, granted), a pod and its token; returns the token."""
    install_crds(admin, ROOT / "charts/regsandbox/crds")
    apply(
        admin, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"tenant-{TENANT}"}}
    )
    labels = {LABEL_TENANT: TENANT, LABEL_SANDBOX: "run"}
    apply(
        admin, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": labels}}
    )
    apply(
        admin,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": "bench-data"},
            "spec": {
                "sector": "research",
                "jurisdiction": "LU",
                "location": {
                    "bucket": BUCKET,
                    "prefix": "data/",
                    "region": "us-east-1",
                    "endpoint": s3.endpoint,
                },
                "personalData": "none",
            },
        },
    )
    apply(
        admin,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Sandbox",
            "metadata": {"name": "run", "namespace": f"tenant-{TENANT}"},
            "spec": {"purpose": "bench", "region": "r", "lifetime": {"ttl": "1h"}},
        },
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    stamp = (now + dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    admin.call_api(
        f"/apis/regsandbox.io/v1alpha1/namespaces/tenant-{TENANT}/sandboxes/run/status",
        "PATCH",
        header_params={"Content-Type": "application/merge-patch+json"},
        body={
            "status": {
                "namespace": NS,
                "expiresAt": stamp,
                "datasets": [{"name": "bench-data", "granted": True}],
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Provisioned",
                        "message": "",
                        "observedGeneration": 1,
                        "lastTransitionTime": now.isoformat().replace("+00:00", "Z"),
                    }
                ],
            }
        },
        response_type="object",
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
    )
    core = client.CoreV1Api(admin)
    apply(
        admin,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "workload", "namespace": NS},
        },
    )
    pod = core.create_namespaced_pod(
        NS,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "bench-0"},
            "spec": {
                "serviceAccountName": "workload",
                "containers": [{"name": "m", "image": "x.invalid/y"}],
            },
        },
    )
    ref = client.V1BoundObjectReference(
        kind="Pod", api_version="v1", name="bench-0", uid=pod.metadata.uid
    )
    spec = client.V1TokenRequestSpec(
        audiences=[AUDIENCE], expiration_seconds=3600, bound_object_ref=ref
    )
    result = core.create_namespaced_service_account_token(
        "workload", NS, client.AuthenticationV1TokenRequest(spec=spec)
    )
    return str(result.status.token)


def _start_gateway(
    work: Path, kubeconfig: Path, s3: MinioServer
) -> tuple[subprocess.Popen[bytes], str]:
    origin = "audit.regsandbox.bench/gateway"
    key = work / "audit.key"
    AuditLog.create(work / "audit", origin, generate_key_file(key, origin)).close()
    port = free_port()
    env = {
        **os.environ,
        "REGSANDBOX_GATEWAY_AUDIT_LOG_DIR": str(work / "audit"),
        "REGSANDBOX_GATEWAY_AUDIT_SIGNING_KEY": str(key),
        "REGSANDBOX_GATEWAY_S3_ACCESS_KEY_ID": s3.access_key,
        "REGSANDBOX_GATEWAY_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "REGSANDBOX_GATEWAY_S3_ENDPOINTS": json.dumps([s3.endpoint]),
        "REGSANDBOX_GATEWAY_CHUNK_BYTES": str(CHUNK),
        "REGSANDBOX_GATEWAY_OUTBOX_BUCKET": OUTBOX,
        "REGSANDBOX_GATEWAY_OUTBOX_ENDPOINT": s3.endpoint,
    }
    code = "from sandbox.cli.gateway import app; app()"
    cmd = [
        sys.executable,
        "-c",
        code,
        "serve",
        "--listen",
        f"127.0.0.1:{port}",
        "--kubeconfig",
        str(kubeconfig),
    ]
    log = (work / "gateway.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"gateway did not start; see {work / 'gateway.log'}")
        time.sleep(0.1)


def _direct_read(s3c: Any, key: str) -> tuple[int, str]:
    body = s3c.get_object(Bucket=BUCKET, Key=key)["Body"]
    digest, size = hashlib.sha256(), 0
    while chunk := body.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _gateway_read(pool: urllib3.PoolManager, url: str, token: str) -> tuple[int, str]:
    """Read through the gateway with urllib3, the HTTP stack boto3 uses for the direct read."""
    digest, size = hashlib.sha256(), 0
    r = pool.request(
        "GET", url, headers={"Authorization": f"Bearer {token}"}, preload_content=False
    )
    if r.status != 200:
        raise SystemExit(f"gateway answered {r.status}")
    while chunk := r.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    r.release_conn()
    return size, digest.hexdigest()


def _writes(
    url: str, token: str, s3c: Any, mib: int, rounds: int, pid: int
) -> tuple[list[float], list[float], int]:
    """Seconds per direct PutObject and per gateway PUT of ``mib`` MiB; peak gateway RSS."""
    data = os.urandom(mib * 2**20)
    expected = hashlib.sha256(data).hexdigest()
    peak, stop = [_rss(pid)], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss(pid))
            time.sleep(0.01)

    def body() -> Any:  # streamed in 1 MiB pieces, as a client sending a file does
        view = memoryview(data)
        for at in range(0, len(data), 2**20):
            yield bytes(view[at : at + 2**20])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    direct, gateway = [], []
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=300) as http:
        for i in range(rounds):
            t = time.perf_counter()
            s3c.put_object(Bucket=OUTBOX, Key=f"direct/{i}.bin", Body=data)
            direct.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = http.put(f"{url}/v1/outbox/model-{i}.bin", content=body())
            gateway.append(time.perf_counter() - t)
            if r.status_code != 201 or r.json()["sha256"] != expected:
                raise SystemExit(f"gateway write answered {r.status_code}: {r.text[:200]}")
    stop.set()
    sampler.join()
    return direct, gateway, peak[0]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=500, help="4 KiB requests per side")
    parser.add_argument("--rounds", type=int, default=5, help="big reads per side (best taken)")
    parser.add_argument("--write-mib", type=int, default=256, help="artifact size; 0: skip")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        work = Path(tmp)
        with running_control_plane(work / "cp") as plane, running_minio(work / "minio") as s3:
            admin = api_client(plane.admin_kubeconfig)
            token = _setup(admin, s3)
            apply(
                admin,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": "regsandbox-system"},
                },
            )
            for obj in gateway_rbac("regsandbox-system"):
                apply(admin, obj)
            kubeconfig = service_account_kubeconfig(
                admin,
                "regsandbox-system",
                work / "gateway.kubeconfig",
                service_account=GATEWAY_NAME,
            )
            s3c = s3.client()
            s3c.create_bucket(Bucket=BUCKET)
            s3c.create_bucket(Bucket=OUTBOX)
            big = os.urandom(args.big_mib * 1024 * 1024)
            s3c.put_object(Bucket=BUCKET, Key="data/big.bin", Body=big)
            expected = hashlib.sha256(big).hexdigest()
            del big
            s3c.put_object(Bucket=BUCKET, Key="data/small.bin", Body=os.urandom(4096))
            proc, url = _start_gateway(work, kubeconfig, s3)
            try:
                http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120)
                pool = urllib3.PoolManager()
                big_url = f"{url}/v1/datasets/bench-data/objects/big.bin"
                small_url = f"{url}/v1/datasets/bench-data/objects/small.bin"
                rss_idle = _rss(proc.pid)
                peak, stop = [rss_idle], threading.Event()

                def sample() -> None:
                    while not stop.is_set():
                        peak[0] = max(peak[0], _rss(proc.pid))
                        time.sleep(0.01)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                # CPU per process tells where the cycles go: the three share the same cores.
                pids = {"minio": _child_pid("minio"), "gateway": proc.pid, "client": os.getpid()}
                load_before = _load()
                direct_s: list[float] = []
                gw_s: list[float] = []
                cpu = {side: dict.fromkeys(pids, 0.0) for side in ("direct", "gateway")}

                def timed(
                    side: str, read: Callable[[], tuple[int, str]], into: list[float]
                ) -> None:
                    before = {name: _cpu(pid) for name, pid in pids.items()}
                    t = time.perf_counter()
                    got = read()
                    into.append(time.perf_counter() - t)
                    for name, pid in pids.items():
                        cpu[side][name] += _cpu(pid) - before[name]
                    assert got == (args.big_mib * 2**20, expected)

                for _ in range(args.rounds):
                    timed("direct", lambda: _direct_read(s3c, "data/big.bin"), direct_s)
                    timed("gateway", lambda: _gateway_read(pool, big_url, token), gw_s)
                stop.set()
                sampler.join()
                rss_after = _rss(proc.pid)
                mib = args.big_mib
                direct_tp, gw_tp = mib / min(direct_s), mib / min(gw_s)
                print(f"big object: {mib} MiB, best of {args.rounds}")
                runs_d = ", ".join(f"{s:.2f}s" for s in direct_s)
                runs_g = ", ".join(f"{s:.2f}s" for s in gw_s)
                print(f"  direct boto3 GET : {direct_tp:8.1f} MiB/s  (runs {runs_d})")
                print(f"  through gateway  : {gw_tp:8.1f} MiB/s  (runs {runs_g})")
                print(f"  ratio            : {gw_tp / direct_tp:8.2f}   (target >= 0.70)")
                paired = sorted(d / g for d, g in zip(direct_s, gw_s, strict=True))
                print(
                    f"  ratio per round  : median {statistics.median(paired):.2f}, "
                    f"range {paired[0]:.2f}-{paired[-1]:.2f}   (same-round pairs; context only)"
                )
                for side, walls in (("direct", direct_s), ("gateway", gw_s)):
                    used = cpu[side]
                    per = ", ".join(
                        f"{name} {1000 * secs / (mib * args.rounds):.2f}"
                        for name, secs in used.items()
                    )
                    busy = sum(used.values()) / sum(walls)
                    print(f"  CPU ms per MiB, {side:7s}: {per}; cores busy {busy:.2f}")
                print(f"  load average     : {load_before} before, {_load()} after")
                print(
                    f"gateway RSS: idle {rss_idle / 2**20:.1f} MiB, peak while streaming "
                    f"{peak[0] / 2**20:.1f} MiB, after {rss_after / 2**20:.1f} MiB"
                )

                for _ in range(50):  # warm-up: connections, TokenReview cache
                    http.get(small_url).raise_for_status()
                    s3c.get_object(Bucket=BUCKET, Key="data/small.bin")["Body"].read()
                direct_ms, gw_ms = [], []
                for _ in range(args.small):
                    t = time.perf_counter()
                    s3c.get_object(Bucket=BUCKET, Key="data/small.bin")["Body"].read()
                    direct_ms.append((time.perf_counter() - t) * 1000)
                    t = time.perf_counter()
                    r = http.get(small_url)
                    gw_ms.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200
                    assert len(r.content) == 4096
                print(f"4 KiB objects: {args.small} sequential GETs per side")
                for name, q in (("p50", 0.50), ("p99", 0.99)):
                    d, g = _pct(direct_ms, q), _pct(gw_ms, q)
                    print(
                        f"  {name}: direct {d:6.2f} ms, gateway {g:6.2f} ms, added {g - d:6.2f} ms"
                    )
                added = _pct(gw_ms, 0.99) - _pct(direct_ms, 0.99)
                mean = statistics.mean(gw_ms)
                print(f"  p99 added: {added:.2f} ms (target <= 10 ms); gateway mean {mean:.2f} ms")
                http.close()
                if args.write_mib:
                    rounds = min(args.rounds, 3)
                    direct_w, gw_w, peak_w = _writes(
                        url, token, s3c, args.write_mib, rounds, proc.pid
                    )
                    mib = args.write_mib
                    d_tp, g_tp = mib / min(direct_w), mib / min(gw_w)
                    print(f"artifact write: {mib} MiB into the outbox, best of {rounds}")
                    print(f"  direct PutObject : {d_tp:8.1f} MiB/s")
                    print(f"  through gateway  : {g_tp:8.1f} MiB/s  (audited, multipart)")
                    print(f"  ratio            : {g_tp / d_tp:8.2f}")
                    print(f"  gateway RSS peak while writing: {peak_w / 2**20:.1f} MiB")
            finally:
                proc.terminate()
                proc.wait(timeout=15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
