"""Benchmark the operator on the real local control plane.

    .venv/bin/python bench/operator_provision.py [--single 20] [--batch 200 1000 2000]

1. one Sandbox from apply to Ready, ``--single`` times in a row: p50 and p99;
2. for each ``--batch`` size, on a fresh control plane and operator, that many
   Sandboxes applied at once with ``kubectl apply --server-side``: the time until all
   are Ready divided by the time kubectl needed to apply them (same run). Readiness is
   followed on one watch of the tenant's Sandboxes, opened before the apply: polling
   (a LIST of every Sandbox five times a second, 10 MB each at 2,000) would load the
   API server the operator is measured on;
3. the operator's peak RSS (VmHWM) when all of them are Ready.

The operator runs as a separate process under the chart's RBAC with the embedded
policy engine and a local audit log, exactly as in the integration tests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, watch

from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.operator_process import (
    OperatorProcess,
    install_operator_rbac,
    service_account_kubeconfig,
)
from sandbox.devenv.processes import free_port
from sandbox.devenv.toolchain import tool_path
from sandbox.kube.apply import apply, get, list_objects
from sandbox.storage.admission import apply_claim_policies
from sandbox.testing import api_client, install_crds, sandbox_manifest

REPO = Path(__file__).resolve().parents[1]


RESYNC_SECONDS = 30
"""The operator's drift-check interval here: its default."""


def _sandbox(name: str, tenant: str) -> dict[str, Any]:
    return sandbox_manifest(
        name, tenant, resources={"cpu": "2", "memory": "4Gi", "storage": "10Gi"}
    )


def _ready(obj: dict[str, Any] | None) -> bool:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


class _ReadyWatch:
    """When each ``batch-`` Sandbox of a namespace was first seen Ready, from one watch."""

    def __init__(self, admin: Any, namespace: str, size: int) -> None:
        self._api = client.CustomObjectsApi(admin)
        self._namespace = namespace
        self._size = size
        self.ready_at: dict[str, float] = {}
        self.done = threading.Event()
        self.error: BaseException | None = None
        listed = self._api.list_namespaced_custom_object(
            "regsandbox.io", "v1alpha1", namespace, "sandboxes", limit=1
        )
        self._version = listed["metadata"]["resourceVersion"]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self.done.is_set():
                stream = watch.Watch().stream(
                    self._api.list_namespaced_custom_object,
                    "regsandbox.io",
                    "v1alpha1",
                    self._namespace,
                    "sandboxes",
                    resource_version=self._version,
                    timeout_seconds=300,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    obj = event["object"]
                    self._version = obj["metadata"]["resourceVersion"]
                    name = obj["metadata"].get("name", "")  # none in a BOOKMARK
                    if (
                        event["type"] != "BOOKMARK"
                        and name.startswith("batch-")
                        and name not in self.ready_at
                        and _ready(obj)
                    ):
                        self.ready_at[name] = time.monotonic()
                        if len(self.ready_at) == self._size:
                            self.done.set()
                            return
        except BaseException as exc:  # reported by wait()
            self.error = exc
            self.done.set()

    def wait(self, timeout: float) -> None:
        """Until every Sandbox was seen Ready; raise if the watch failed or timed out."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"{len(self.ready_at)} of {self._size} Ready after {timeout}s")
        if self.error is not None:
            raise RuntimeError("the Ready watch failed") from self.error


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _requests(api: Any) -> Counter[tuple[str, str]]:
    """``apiserver_request_total`` summed by (verb, resource), excluding watches."""
    response = api.call_api(
        "/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False
    )[0]
    counts: Counter[tuple[str, str]] = Counter()
    for line in response.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("verb") in ("WATCH", "CONNECT"):
            continue
        resource = labels.get("resource", "")
        if labels.get("subresource"):
            resource += "/" + labels["subresource"]
        counts[(labels.get("verb", ""), resource)] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def _uncounted_quotas(api: Any, tenant: str) -> int:
    """Batch sandboxes whose ResourceQuota does not count one claim (workspace)."""
    quotas = client.CoreV1Api(api).list_resource_quota_for_all_namespaces(
        label_selector=f"regsandbox.io/tenant={tenant}"
    )
    return sum(
        1
        for q in quotas.items
        if q.metadata.namespace.startswith(f"sbx-{tenant}-batch-")
        and ((q.status and q.status.used) or {}).get("persistentvolumeclaims") != "1"
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _start(tmp: Path) -> tuple[ControlPlane, OperatorProcess, Any, str]:
    """A fresh control plane with the chart's RBAC, an operator, and a Ready tenant."""
    plane = ControlPlane(tmp / "cp")
    plane.up()
    admin = api_client(plane.admin_kubeconfig)
    install_crds(admin, REPO / "charts/regsandbox/crds")
    install_operator_rbac(admin, "regsandbox-system")
    apply_claim_policies(admin)  # as the chart installs it
    kubeconfig = service_account_kubeconfig(admin, "regsandbox-system", tmp / "sa.kubeconfig")
    signer = generate_key_file(tmp / "audit.key", "bench.regsandbox/audit")
    AuditLog.create(tmp / "audit", "bench.regsandbox/audit", signer).close()
    env = {
        "REGSANDBOX_CLUSTER_REGION": "onprem:lu-national-1",
        "REGSANDBOX_CLUSTER_JURISDICTION": "LU",
        "REGSANDBOX_RESYNC_SECONDS": str(RESYNC_SECONDS),
        "REGSANDBOX_AUDIT_LOG_DIR": str(tmp / "audit"),
        "REGSANDBOX_AUDIT_SIGNING_KEY": str(tmp / "audit.key"),
        "REGSANDBOX_METRICS_PORT": str(free_port()),
        "REGSANDBOX_LOG_LEVEL": "WARNING",
    }
    proc = OperatorProcess(kubeconfig, env, tmp / "operator.log").start()
    tenant = "benchbank"
    apply(
        admin,
        {
            "apiVersion": "regsandbox.io/v1alpha1",
            "kind": "Tenant",
            "metadata": {"name": tenant},
            "spec": {
                "organisation": "Bench Bank",
                "sector": "finance",
                "jurisdiction": "LU",
                "members": [{"user": "bench", "role": "member"}],
                "attestations": {"supervisoryAuthority": "CSSF"},
            },
        },
    )
    proc.wait_until(lambda: get(admin, "Namespace", f"tenant-{tenant}"), 60, "tenant")
    return plane, proc, admin, tenant


def _single(admin: Any, proc: OperatorProcess, tenant: str, runs: int) -> None:
    """One Sandbox at a time from apply to Ready: p50 and p99."""
    single: list[float] = []
    for i in range(runs):
        body = _sandbox(f"single-{i}", tenant)
        started = time.monotonic()
        apply(admin, body)
        proc.wait_until(
            lambda b=body: _ready(get(admin, "Sandbox", b["metadata"]["name"], f"tenant-{tenant}")),
            60,
            "single sandbox",
        )
        single.append(time.monotonic() - started)
    p50, p99 = statistics.median(single), _percentile(single, 0.99)
    print(f"| one Sandbox apply → Ready ({runs} runs) | p50 {p50:.2f} s, p99 {p99:.2f} s |")


def _profile(pid: int, out: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the operator into ``out`` (raw folded stacks) until stopped."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("| (py-spy not on PATH: no profile) | |")
        return None
    return subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--format", "raw", "--output", out, "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _batch(
    plane: ControlPlane,
    admin: Any,
    proc: OperatorProcess,
    tenant: str,
    size: int,
    args: argparse.Namespace,
    tmp: Path,
) -> None:
    """``size`` Sandboxes applied at once: all Ready / kubectl's apply time, and more."""
    manifest = tmp / "batch.yaml"
    manifest.write_text(yaml.safe_dump_all([_sandbox(f"batch-{i}", tenant) for i in range(size)]))
    kubectl = [str(tool_path("kubectl")), "--kubeconfig", str(plane.admin_kubeconfig)]
    before = _requests(admin) if args.requests else Counter()
    assert proc.proc is not None
    spy = _profile(proc.proc.pid, f"{args.profile}.{size}.txt") if args.profile else None
    readiness = _ReadyWatch(admin, f"tenant-{tenant}", size)
    started = time.monotonic()
    subprocess.run(
        [*kubectl, "apply", "--server-side", "-f", str(manifest)],
        check=True,
        capture_output=True,
    )
    applied_at = time.monotonic()
    applied = applied_at - started
    readiness.wait(1800)
    ready = max(readiness.ready_at.values()) - started
    ready_by_apply = sum(1 for t in readiness.ready_at.values() if t <= applied_at)

    def all_ready() -> bool:
        items = list_objects(admin, "Sandbox", f"tenant-{tenant}")
        return sum(
            1 for o in items if o["metadata"]["name"].startswith("batch-") and _ready(o)
        ) == (size)

    if not proc.alive() or not all_ready():  # one LIST, outside the timed window
        raise RuntimeError("the watch saw every Sandbox Ready, a LIST does not")
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    # Outside the timed window: does each quota count its workspace claim yet?
    # (Charged by quota admission, or later recounted by the drift check.)
    uncounted = _uncounted_quotas(admin, tenant)
    if args.requests:
        delta = _requests(admin)
        delta.subtract(before)
        total = sum(delta.values())
        print(f"| API requests per batch sandbox | {total / size:.1f} |")
        for (verb, resource), count in delta.most_common():
            if count > 0:
                print(f"|   {verb} {resource} | {count / size:.2f} |")
    print(
        f"| {size} Sandboxes: all Ready / kubectl apply --server-side | "
        f"{ready:.1f} s / {applied:.1f} s = {ready / applied:.2f} |"
    )
    print(f"| Ready when kubectl's apply returned | {ready_by_apply} of {size} |")
    rss = _rss_mb(proc.proc.pid)
    print(f"| operator peak RSS when all {size} were Ready | {rss:.0f} MB |")
    print(
        "| quotas not yet counting the workspace claim when all were Ready "
        f"| {uncounted} of {size} |"
    )
    if uncounted:
        counted_at = time.monotonic()
        proc.wait_until(lambda: _uncounted_quotas(admin, tenant) == 0, 300, "every claim counted")
        print(
            f"| ... all counted (drift check every {RESYNC_SECONDS} s) after | "
            f"{time.monotonic() - counted_at:.1f} s more |"
        )
    state = plane.load_state()
    assert state is not None
    cpu = {
        "operator": _cpu_seconds(proc.proc.pid),
        "kube-apiserver": _cpu_seconds(state.pids["kube-apiserver"]),
        "etcd": _cpu_seconds(state.pids["etcd"]),
    }
    print(
        "| CPU seconds used during the whole run | "
        + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
        + " |"
    )
    print(f"| operator peak RSS at the end | {_rss_mb(proc.proc.pid):.0f} MB |")
    print(f"| load average (1, 5, 15 min) | {' '.join(f'{x:.2f}' for x in os.getloadavg())} |")


def main() -> None:
    """Run the measurements for each batch size, each on a fresh control plane."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=[200],
        help="batch sizes; each on a fresh control plane and operator",
    )
    parser.add_argument(
        "--requests",
        action="store_true",
        help="also print API requests per batch sandbox by verb and resource "
        "(scraped before the batch and after it is Ready, outside the timed window)",
    )
    parser.add_argument(
        "--profile",
        metavar="PREFIX",
        help="sample the operator with py-spy during each batch into PREFIX.<size>.txt",
    )
    args = parser.parse_args()
    for number, size in enumerate(args.batch):
        print(f"| **batch of {size}** | load average {os.getloadavg()[0]:.2f} at start |")
        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir)
            plane: ControlPlane | None = None
            proc: OperatorProcess | None = None
            try:
                plane, proc, admin, tenant = _start(tmp)
                if number == 0 and args.single:
                    _single(admin, proc, tenant, args.single)
                _batch(plane, admin, proc, tenant, size, args, tmp)
            finally:
                if proc is not None:
                    proc.stop()
                if plane is not None:
                    plane.down()


if __name__ == "__main__":
    main()
