"""Reads from a sandbox pod: through the gateway against the same pod reading MinIO directly.

    sudo .venv/bin/python bench/pod_reads.py [--small 200] [--big 3] [--big-mib 256] [--rounds 2]

Needs root and the node's tools and images (``make deps tools``). A fresh control plane
with a node, MinIO on the host end of the node's link, and the Helm chart installed from
the local images as a platform engineer installs it (operator with its OPA sidecar, two
gateway replicas, the audit service). A Tenant, a Dataset of two objects (4 KiB and
``--big-mib`` MiB) and a Sandbox granted it; one workload pod (the regsandbox image, the
sandbox's ``workload`` ServiceAccount, a projected token for the gateway).

From inside that pod, one ``kubectl exec`` per batch (so exec's own cost is not timed),
each read opens a new connection, streams the body in 1 MiB blocks through SHA-256 and
drops it (what a client checking the gateway's ``sha256`` does; nothing is kept, so
256 MiB fits the pod's memory limit):

- **gateway**: ``GET /v1/datasets/<dataset>/objects/<key>`` on the chart's gateway
  Service with the pod's token — the audited path: TokenReview (cached by the gateway for
  10 s), the Sandbox's grant, MinIO, and the read appended to the audit service's log
  before the answer;
- **direct**: the same object from MinIO with a presigned GET URL (made on the host,
  valid for one hour, for that object only: read-only credentials for exactly what the
  gateway would serve), reachable only because the bench adds a **test-only**
  NetworkPolicy, ``bench-only-direct-minio``, allowing this pod egress to MinIO's
  address and port. No sandbox has that in production: MinIO is unreachable from a pod
  (tests/dataplane/test_isolation_traffic.py). The operator runs with a one-hour resync
  so that its drift correction does not remove the exception during the run; the bench
  checks it is still there at the end.

Both paths run in the same pod, alternating per round. Reported: p50/p99 latency of the
4 KiB reads, MB/s (10^6 bytes/s) of the big reads (median and best), the ratios, and the
load average seen during the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubernetes import client

from sandbox.devenv.chartstack import ChartStack, running_chart_stack
from sandbox.devenv.dataplane import unavailable_reason
from sandbox.devenv.stack import StackSettings
from sandbox.devenv.tenancy import add_tenant_with_dataset, dataset_manifest, grant_sandbox
from sandbox.devenv.toolchain import find_tools_dir, tool_path
from sandbox.devenv.workload import TOKEN_DIR, workload_pod
from sandbox.kube.apply import apply, get

BUCKET = "bench-datasets"
SMALL_KEY, BIG_KEY = "reads/small-4k.bin", "reads/big.bin"
POD = "reader"
PROJECTED_DIR = TOKEN_DIR
"""Where the pod's projected ServiceAccount token for the gateway is mounted (file ``token``)."""
EXCEPTION = "bench-only-direct-minio"
APP_UID = 10001

TIMED_READS = """
import hashlib, json, sys, time, urllib.request
url, token_file, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
headers = {}
if token_file != "-":
    headers["Authorization"] = "Bearer " + open(token_file).read().strip()
rows = []
for _ in range(count):
    started = time.perf_counter()
    digest, size = hashlib.sha256(), 0
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=300) as r:
        while block := r.read(1 << 20):
            size += len(block)
            digest.update(block)
    rows.append([time.perf_counter() - started, size, digest.hexdigest()])
print(json.dumps(rows))
"""


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _wait(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


class LoadWatch:
    """Load averages seen at each :meth:`sample` (the 1-minute figure)."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def sample(self) -> None:
        self.seen.append(os.getloadavg()[0])


def _reader_pod(namespace: str, image: str) -> dict[str, Any]:
    resources = {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "1", "memory": "256Mi"},
    }
    return workload_pod(POD, namespace, image, APP_UID, resources=resources)


def direct_exception(namespace: str, endpoint: str) -> dict[str, Any]:
    """The TEST-ONLY NetworkPolicy: the reader pod may open TCP to MinIO's address:port."""
    parts = urlsplit(endpoint)
    if not parts.hostname or not parts.port:
        raise ValueError(f"MinIO endpoint without host and port: {endpoint}")
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": EXCEPTION,
            "namespace": namespace,
            "annotations": {
                "regsandbox.io/test-only": "bench/pod_reads.py: direct MinIO reads to compare "
                "with the gateway; never in a real sandbox"
            },
        },
        "spec": {
            "podSelector": {"matchLabels": {"app": POD}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": f"{parts.hostname}/32"}}],
                    "ports": [{"protocol": "TCP", "port": parts.port}],
                }
            ],
        },
    }


class Reader:
    """Runs timed reads in the pod through ``kubectl exec``."""

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        self.kubectl = [str(tool_path("kubectl")), f"--kubeconfig={kubeconfig}"]
        self.namespace = namespace

    def reads(self, url: str, count: int, token: bool) -> list[tuple[float, int, str]]:
        """``count`` reads of ``url``; (seconds, bytes, sha256) each."""
        result = subprocess.run(
            [
                *self.kubectl,
                "exec",
                "-n",
                self.namespace,
                POD,
                "--",
                "python3",
                "-c",
                TIMED_READS,
                url,
                f"{PROJECTED_DIR}/token" if token else "-",
                str(count),
            ],
            capture_output=True,
            text=True,
            timeout=120 + 60 * count,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"reads of {url.split('?')[0]} failed: {result.stderr[-800:]}")
        return [tuple(row) for row in json.loads(result.stdout.strip().splitlines()[-1])]

    def succeeds(self, url: str, token: bool) -> bool:
        try:
            self.reads(url, 1, token)
        except (RuntimeError, subprocess.TimeoutExpired):
            return False
        return True


def measure(args: argparse.Namespace, base: Path, load: LoadWatch) -> dict[str, Any]:
    """Set everything up, run the rounds, return the raw timings."""
    print("starting a control plane with a node and installing the chart", flush=True)
    settings = StackSettings(
        directory=base,
        repo=find_tools_dir().parent,
        examples=(),
        # Drift correction would remove the test-only exception: resync hourly.
        resync_seconds=3600,
        progress=lambda m: print(m, flush=True),
    )
    with running_chart_stack(settings) as stack:
        return _run(args, stack, load)


def _run(args: argparse.Namespace, stack: ChartStack, load: LoadWatch) -> dict[str, Any]:
    api, storage = stack.admin, stack.minio
    small, big = secrets.token_bytes(4096), secrets.token_bytes(args.big_mib << 20)
    digests = {
        SMALL_KEY: hashlib.sha256(small).hexdigest(),
        BIG_KEY: hashlib.sha256(big).hexdigest(),
    }
    s3 = storage.client()
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=SMALL_KEY, Body=small)
    s3.put_object(Bucket=BUCKET, Key=BIG_KEY, Body=big)
    del big
    tag = secrets.token_hex(3)
    dataset, tenant, sandbox = f"reads-{tag}", f"bench-{tag}", f"reads-{tag}"
    add_tenant_with_dataset(
        api,
        _wait,
        tenant=tenant,
        dataset=dataset_manifest(
            dataset,
            bucket=BUCKET,
            prefix="reads/",
            endpoint=storage.endpoint,
            register_reference="ROI-BENCH",
        ),
        organisation="Bench",
        timeout=120,
        what="the tenant's home namespace",
    )
    namespace = grant_sandbox(
        api, _wait, tenant=tenant, sandbox=sandbox, dataset=dataset, timeout=180
    )
    client.CoreV1Api(api).create_namespaced_pod(namespace, _reader_pod(namespace, stack.image))

    def ready() -> bool:
        pod = client.CoreV1Api(api).read_namespaced_pod(POD, namespace)
        return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])

    _wait(ready, 180, "the reader pod Ready")
    apply(api, direct_exception(namespace, storage.endpoint))
    gateway = f"{stack.gateway_url}/v1/datasets/{dataset}"
    urls = {
        "gateway": {k: f"{gateway}/objects/{k.removeprefix('reads/')}" for k in digests},
        "direct": {
            k: s3.generate_presigned_url(
                "get_object", Params={"Bucket": BUCKET, "Key": k}, ExpiresIn=3600
            )
            for k in digests
        },
    }
    reader = Reader(stack.plane.admin_kubeconfig, namespace)
    # Warm up both paths (DNS, the first TokenReview and grant lookup, the policy in force).
    _wait(lambda: reader.succeeds(urls["direct"][SMALL_KEY], False), 120, "the exception")
    _wait(lambda: reader.succeeds(urls["gateway"][SMALL_KEY], True), 120, "the gateway")
    timings: dict[str, dict[str, list[float]]] = {
        path: {SMALL_KEY: [], BIG_KEY: []} for path in urls
    }
    for round_ in range(args.rounds):
        order = ("gateway", "direct") if round_ % 2 == 0 else ("direct", "gateway")
        for path in order:
            for key, count in ((SMALL_KEY, args.small), (BIG_KEY, args.big)):
                load.sample()
                rows = reader.reads(urls[path][key], count, token=path == "gateway")
                for seconds, size, digest in rows:
                    if digest != digests[key]:
                        raise RuntimeError(f"{path} read of {key}: wrong sha256 ({size} bytes)")
                    timings[path][key].append(seconds)
                print(
                    f"round {round_ + 1} {path:7} {key}: {count} reads, "
                    f"median {statistics.median(s for s, _, _ in rows) * 1000:.1f} ms",
                    flush=True,
                )
    load.sample()
    if get(api, "NetworkPolicy", EXCEPTION, namespace) is None:
        raise RuntimeError("the test-only exception was removed during the run")
    return {"timings": timings, "big_bytes": args.big_mib << 20}


def report(result: dict[str, Any], args: argparse.Namespace, load: LoadWatch) -> None:
    """Print the Markdown table."""
    timings, big_bytes = result["timings"], result["big_bytes"]
    small = {p: [s * 1000 for s in timings[p][SMALL_KEY]] for p in timings}
    rate = {p: [big_bytes / s / 1e6 for s in timings[p][BIG_KEY]] for p in timings}
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    print()
    print(f"finished {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC")
    print(
        f"machine: {os.cpu_count()} CPUs, {memory:.1f} GiB; load average (1 min) during the "
        f"run {min(load.seen):.1f}-{max(load.seen):.1f}"
    )
    print("| measurement | gateway (audited) | direct MinIO (test-only exception) | ratio |")
    print("|---|---|---|---|")
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        g, d = _quantile(small["gateway"], q), _quantile(small["direct"], q)
        print(
            f"| 4 KiB read latency {label} ({len(small['gateway'])} reads each) | "
            f"{g:.1f} ms | {d:.1f} ms | {g / d:.1f}x |"
        )
    g, d = statistics.median(rate["gateway"]), statistics.median(rate["direct"])
    print(
        f"| {args.big_mib} MiB read, median ({len(rate['gateway'])} reads each) | "
        f"{g:.0f} MB/s | {d:.0f} MB/s | {g / d:.2f} |"
    )
    g, d = max(rate["gateway"]), max(rate["direct"])
    print(f"| {args.big_mib} MiB read, best | {g:.0f} MB/s | {d:.0f} MB/s | {g / d:.2f} |")


def main() -> None:
    """Run the benchmark and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", type=int, default=200, help="4 KiB reads per path and round")
    parser.add_argument("--big", type=int, default=3, help="big reads per path and round")
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot run the data plane here: {reason}")
    load = LoadWatch()
    load.sample()
    with tempfile.TemporaryDirectory(prefix="bench-pod-reads-") as tmp:
        result = measure(args, Path(tmp), load)
    report(result, args, load)


if __name__ == "__main__":
    main()
