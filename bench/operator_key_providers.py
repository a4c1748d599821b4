"""Benchmark the operator with each key provider, in one run: local, pkcs11, aws-kms.

    .venv/bin/python bench/operator_key_providers.py [--sandboxes 200]
        [--order local,pkcs11,aws-kms] [--rounds 1] [--requests]

For each provider (``--order``; each further ``--rounds`` round starts one provider
later, so none always goes first) the run takes a **fresh local control plane** and a
fresh backend, starts the operator as its own process under the chart's RBAC (as
``bench/operator_provision.py`` does), and provisions ``--sandboxes`` Sandboxes applied
at once. It reports, per provider:

1. all Ready / ``kubectl apply --server-side`` of the same objects: the ratio exactly as
   ``operator_provision`` measures it (its ``_batch`` is called, not copied);
2. CPU seconds from just before the apply until all are Ready: the operator, the key
   backend's own process (the pkcs11 worker that talks to SoftHSM2, or moto's server),
   kube-apiserver and etcd;
3. the operator's peak RSS (VmHWM) when all are Ready;
4. the keys in the backend at the end, counted there and not asked of the operator:
   wrapped-key Secrets (local, pkcs11), token objects (pkcs11, read by a separate
   process logged in to the token), KMS keys and aliases (aws-kms, read from moto):
   exactly one per sandbox.

Backends: ``local`` keeps its KEK and wrapped keys in Secrets; ``pkcs11`` uses a SoftHSM2
token (file object store) initialised for the round; ``aws-kms`` uses moto's HTTP server
(``moto_server``, its own process) on 127.0.0.1. moto is not KMS: it answers from
memory in the same machine, so its figures hold the provider's and the operator's own
cost, not a network KMS's latency (tens of ms a call) or its rate limits.

moto serves only AWS region names, so every provider runs on the same site: a cluster
in ``aws:eu-central-1`` (jurisdiction DE) with a DE tenant, as the operator crash test
does. aws-kms requires the aws-ebs storage profile (volumes encrypted by the KMS key,
no passphrase Secret); local and pkcs11 use the default longhorn profile (one more
Secret per sandbox, holding the volume passphrase unwrapped from the data key).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import boto3
import operator_provision as op
from kubernetes import client

from audit.log import AuditLog
from audit.signing import generate_key_file
from sandbox.devenv.controlplane import ControlPlane
from sandbox.devenv.operator_process import (
    OperatorProcess,
    install_operator_rbac,
    service_account_kubeconfig,
)
from sandbox.devenv.processes import free_port
from sandbox.devenv.softhsm import SoftHsmToken, init_softhsm
from sandbox.keys.base import MANAGED_BY, SANDBOX_LABEL
from sandbox.keys.kms import alias_name
from sandbox.keys.pkcs11 import kek_label
from sandbox.kube.apply import apply, get, list_objects
from sandbox.storage.admission import apply_claim_policies
from sandbox.testing import api_client, install_crds, sandbox_manifest

PROVIDERS = ("local", "pkcs11", "aws-kms")
SITE_REGION = "aws:eu-central-1"
KMS_REGION = "eu-central-1"
JURISDICTION = "DE"
SYSTEM_NS = "regsandbox-system"
TENANT = "benchbank"
WRAPPED = "regsandbox.io/key=wrapped-data-key"
MOTO_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",  # moto accepts any
    "AWS_DEFAULT_REGION": KMS_REGION,
}

_LIST_HSM_KEYS = """
import json, sys
import pkcs11
from pkcs11 import Attribute, ObjectClass
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with token.open(user_pin=open(sys.argv[3]).read().strip()) as session:
    print(json.dumps([
        [obj[Attribute.LABEL], bytes(obj[Attribute.ID]).hex()]
        for obj in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
    ]))
"""
"""Lists the token's secret keys from a process of its own (SoftHSM2 reads
``SOFTHSM2_CONF`` once per process, and each round has its own token)."""


@dataclass
class KeyCount:
    """The keys found in a backend at the end of a batch."""

    exactly_one: int
    """Batch sandboxes with exactly one key."""
    sandboxes: int
    """Batch sandboxes."""
    detail: str
    """What was counted where."""


@dataclass
class Backend:
    """A provider's backend for one round: operator settings, key census, its process."""

    env: dict[str, str]
    count: Callable[[client.ApiClient, list[str]], KeyCount]
    pid: Callable[[OperatorProcess], int | None] = field(default=lambda _: None)
    """The backend's own process, whose CPU is reported beside the operator's."""


@dataclass
class Sample:
    """CPU seconds (cumulative) of the processes involved, and the operator's VmHWM."""

    at: float
    cpu: dict[str, float]
    rss_mb: float = float("nan")


@dataclass
class Result:
    """One provider's figures in one round."""

    provider: str
    started: str
    load: tuple[float, float]
    ratio_line: str = "not measured"
    cpu: dict[str, float] = field(default_factory=dict)
    rss_ready_mb: float = float("nan")
    rss_mb: float = float("nan")
    backend_rss_mb: float = float("nan")
    keys: KeyCount | None = None


def _secret_keys(api: client.ApiClient, sids: list[str]) -> Counter[str]:
    """Wrapped-key Secrets per sandbox id (the annotation the store writes)."""
    found: Counter[str] = Counter()
    for secret in list_objects(api, "Secret", SYSTEM_NS, WRAPPED):
        sid = ((secret["metadata"].get("annotations")) or {}).get("regsandbox.io/sandbox-id")
        if sid in sids:
            found[sid] += 1
    return found


def _local_backend() -> Iterator[Backend]:
    def count(api: client.ApiClient, sids: list[str]) -> KeyCount:
        secrets = _secret_keys(api, sids)
        one = sum(1 for sid in sids if secrets[sid] == 1)
        return KeyCount(one, len(sids), f"{sum(secrets.values())} wrapped-key Secrets")

    yield Backend({"REGSANDBOX_KEY_PROVIDER": "local"}, count)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _pkcs11_backend(directory: Path, label: str) -> Iterator[Backend]:
    token: SoftHsmToken = init_softhsm(directory, label=label)

    def objects() -> list[tuple[str, str]]:
        listed = subprocess.run(
            [sys.executable, "-c", _LIST_HSM_KEYS, str(token.module), label, str(token.pin_file)],
            env={**os.environ, "SOFTHSM2_CONF": str(token.conf)},
            capture_output=True,
            text=True,
            check=True,
        )
        return [(str(lab), str(oid)) for lab, oid in json.loads(listed.stdout)]

    def count(api: client.ApiClient, sids: list[str]) -> KeyCount:
        secrets = _secret_keys(api, sids)
        on_token = Counter(lab for lab, _ in objects())
        one = sum(1 for sid in sids if secrets[sid] == 1 and on_token[kek_label(sid)] == 1)
        return KeyCount(
            one,
            len(sids),
            f"{sum(secrets.values())} wrapped-key Secrets, "
            f"{sum(on_token.values())} secret keys on the token",
        )

    def worker(operator: OperatorProcess) -> int | None:
        """The operator's token worker (started at its first token call), if running."""
        for kid in _children(operator.pid) if operator.pid else []:
            with contextlib.suppress(OSError):
                if b"pkcs11_worker" in Path(f"/proc/{kid}/cmdline").read_bytes():
                    return kid
        return None

    yield Backend(token.operator_env(), count, worker)


def _moto_backend(directory: Path) -> Iterator[Backend]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(directory / "moto.log").open("wb"),
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as sock, contextlib.suppress(OSError):
                sock.connect(("127.0.0.1", port))
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"moto_server did not listen on {endpoint}")
            time.sleep(0.1)
        kms = boto3.Session(
            aws_access_key_id=MOTO_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=MOTO_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        ).client("kms", region_name=KMS_REGION, endpoint_url=endpoint)

        def count(api: client.ApiClient, sids: list[str]) -> KeyCount:
            enabled: Counter[str] = Counter()
            states: Counter[str] = Counter()
            for page in kms.get_paginator("list_keys").paginate():
                for key in page["Keys"]:
                    tags = {
                        t["TagKey"]: t["TagValue"]
                        for t in kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]
                    }
                    if tags.get("app.kubernetes.io/managed-by") != MANAGED_BY:
                        continue
                    state = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"]
                    states[state] += 1
                    if state == "Enabled":
                        enabled[tags.get(SANDBOX_LABEL, "")] += 1
            aliases = {
                a["AliasName"]
                for page in kms.get_paginator("list_aliases").paginate()
                for a in page["Aliases"]
            }
            secrets = _secret_keys(api, sids)
            one = sum(
                1
                for sid in sids
                if enabled[sid] == 1 and alias_name(sid) in aliases and secrets[sid] == 0
            )
            return KeyCount(
                one,
                len(sids),
                f"{sum(states.values())} KMS keys "
                f"({', '.join(f'{n} {state}' for state, n in sorted(states.items()))}), "
                f"{sum(1 for a in aliases if a.startswith('alias/regsandbox/'))} aliases, "
                f"{sum(secrets.values())} wrapped-key Secrets",
            )

        env = {
            "REGSANDBOX_KEY_PROVIDER": "aws-kms",
            "REGSANDBOX_KMS_ENDPOINT_URL": endpoint,
            "REGSANDBOX_KMS_REGIONS": json.dumps([KMS_REGION]),
            "REGSANDBOX_STORAGE_PROFILE": json.dumps({"kind": "aws-ebs"}),
            **MOTO_CREDENTIALS,
        }
        yield Backend(env, count, lambda _: server.pid)
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def _backend(
    provider: str, directory: Path, round_: int
) -> contextlib.AbstractContextManager[Backend]:
    if provider == "local":
        return contextlib.contextmanager(_local_backend)()
    if provider == "pkcs11":
        return contextlib.contextmanager(_pkcs11_backend)(directory / "softhsm", f"bench-{round_}")
    return contextlib.contextmanager(_moto_backend)(directory)


def _start(tmp: Path, backend: Backend) -> tuple[ControlPlane, OperatorProcess, client.ApiClient]:
    """``operator_provision._start`` on this benchmark's site, with the provider's settings.

    (That function fixes the Luxembourg site, where moto's KMS cannot serve keys.)
    """
    plane = ControlPlane(tmp / "cp")
    plane.up()
    try:
        admin = api_client(plane.admin_kubeconfig)
        install_crds(admin, op.REPO / "charts/regsandbox/crds")
        install_operator_rbac(admin, SYSTEM_NS)
        apply_claim_policies(admin)
        kubeconfig = service_account_kubeconfig(admin, SYSTEM_NS, tmp / "sa.kubeconfig")
        signer = generate_key_file(tmp / "audit.key", "bench.regsandbox/audit")
        AuditLog.create(tmp / "audit", "bench.regsandbox/audit", signer).close()
        env = {
            "REGSANDBOX_CLUSTER_REGION": SITE_REGION,
            "REGSANDBOX_CLUSTER_JURISDICTION": JURISDICTION,
            "REGSANDBOX_RESYNC_SECONDS": str(op.RESYNC_SECONDS),
            "REGSANDBOX_AUDIT_LOG_DIR": str(tmp / "audit"),
            "REGSANDBOX_AUDIT_SIGNING_KEY": str(tmp / "audit.key"),
            "REGSANDBOX_METRICS_PORT": str(free_port()),
            "REGSANDBOX_LOG_LEVEL": "WARNING",
            **backend.env,
        }
        proc = OperatorProcess(kubeconfig, env, tmp / "operator.log").start()
        apply(
            admin,
            {
                "apiVersion": "regsandbox.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": TENANT},
                "spec": {
                    "organisation": "Bench Bank",
                    "sector": "finance",
                    "jurisdiction": JURISDICTION,
                    "members": [{"user": "bench", "role": "member"}],
                    "attestations": {"supervisoryAuthority": "CSSF"},
                },
            },
        )
        proc.wait_until(lambda: get(admin, "Namespace", f"tenant-{TENANT}"), 60, "tenant")
    except BaseException:
        plane.down()
        raise
    return plane, proc, admin


class _Probe:
    """Stands in for the OperatorProcess given to ``operator_provision._batch``: when its
    wait for all Ready ("the batch") returns, the CPU and RSS figures are taken."""

    def __init__(self, operator: OperatorProcess, sample: Callable[[], Sample]) -> None:
        self.operator = operator
        self.proc = operator.proc
        self.sample = sample
        self.at_ready: Sample | None = None

    def wait_until(self, check: Any, timeout: float, what: str) -> Any:
        value = self.operator.wait_until(check, timeout, what)
        if what == "the batch":  # _batch's wait for all Ready
            self.at_ready = self.sample()
        return value


class _Tee(io.StringIO):
    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text)
        return super().write(text)


@contextlib.contextmanager
def _on_site() -> Iterator[None]:
    """Make ``operator_provision``'s batch Sandboxes ask for this benchmark's region."""
    original = op._sandbox

    def sandbox(name: str, tenant: str) -> dict[str, Any]:
        return sandbox_manifest(
            name,
            tenant,
            region=SITE_REGION,
            resources={"cpu": "2", "memory": "4Gi", "storage": "10Gi"},
        )

    op._sandbox = sandbox
    try:
        yield
    finally:
        op._sandbox = original


def _run_one(
    provider: str, round_: int, size: int, requests: bool, tmp: Path, single: int
) -> Result:
    load = os.getloadavg()
    result = Result(provider, time.strftime("%H:%M:%S", time.gmtime()), (load[0], load[0]))
    print(f"\n### {provider}, round {round_ + 1}: load average {load[0]:.2f} at start", flush=True)
    with _backend(provider, tmp, round_) as backend:
        plane, proc, admin = _start(tmp, backend)
        try:
            state = plane.load_state()
            assert state is not None
            assert proc.pid is not None
            operator_pid = proc.pid
            pids = {
                "operator": operator_pid,
                "kube-apiserver": state.pids["kube-apiserver"],
                "etcd": state.pids["etcd"],
            }
            backend_name = {"pkcs11": "pkcs11 worker", "aws-kms": "moto server"}.get(provider)

            def sample() -> Sample:
                cpu = {name: op._cpu_seconds(pid) for name, pid in pids.items()}
                if backend_name is not None:
                    # A worker not started yet has used no CPU; one replaced in the
                    # window would be undercounted (the provider replaces it after
                    # 20,000 calls, far more than a batch makes).
                    backend_pid = backend.pid(proc)
                    cpu[backend_name] = op._cpu_seconds(backend_pid) if backend_pid else 0.0
                return Sample(time.monotonic(), cpu, op._rss_mb(operator_pid))

            probe = _Probe(proc, sample)
            if single:
                # As operator_provision runs its first batch: after single sandboxes, so the
                # operator is warm (policy engine compiled, clients connected) and works
                # while kubectl applies. A cold operator starts late enough that kubectl
                # has the API server to itself for 200 objects (0.9 s instead of 9 s),
                # which makes the ratio incomparable.
                with _on_site():
                    op._single(admin, proc, TENANT, single)
            before = sample()
            tee = _Tee(sys.stdout)
            with _on_site(), contextlib.redirect_stdout(tee):
                op._batch(
                    plane,
                    admin,
                    cast(OperatorProcess, probe),
                    TENANT,
                    size,
                    argparse.Namespace(requests=requests, profile=None),
                    tmp,
                )
            ratio = re.search(
                r"all Ready / kubectl apply --server-side \| ([0-9.]+ s / [0-9.]+ s = [0-9.]+)",
                tee.getvalue(),
            )
            result.ratio_line = ratio.group(1) if ratio else "(not found in _batch's output)"
            if probe.at_ready is not None:
                result.cpu = {k: v - before.cpu[k] for k, v in probe.at_ready.cpu.items()}
                result.rss_ready_mb = probe.at_ready.rss_mb
            result.rss_mb = op._rss_mb(operator_pid)  # VmHWM: the peak so far
            backend_pid = backend.pid(proc)
            if backend_pid is not None:
                result.backend_rss_mb = op._rss_mb(backend_pid)
            sids = [f"sbx-{TENANT}-batch-{i}" for i in range(size)]
            result.keys = backend.count(admin, sids)
        finally:
            proc.stop()
            plane.down()
    result.load = (result.load[0], os.getloadavg()[0])
    return result


def _table(results: list[Result], order: list[str]) -> list[str]:
    by: dict[str, list[Result]] = {p: [r for r in results if r.provider == p] for p in order}

    def cell(provider: str, render: Callable[[Result], str]) -> str:
        return "; ".join(render(r) for r in by[provider])

    def cpu(name: str) -> Callable[[Result], str]:
        return lambda r: f"{r.cpu[name]:.1f} s" if name in r.cpu else "—"

    def keys(r: Result) -> str:
        if r.keys is None:
            return "not counted"
        mark = "✓" if r.keys.exactly_one == r.keys.sandboxes else "✗"
        return f"{r.keys.exactly_one} of {r.keys.sandboxes} {mark} ({r.keys.detail})"

    names = {"aws-kms": "aws-kms (moto)", "pkcs11": "pkcs11 (SoftHSM2)"}
    rows = [
        "| measurement | " + " | ".join(names.get(p, p) for p in order) + " |",
        "|---|" + "---|" * len(order),
    ]
    lines: list[tuple[str, Callable[[Result], str]]] = [
        (
            "started (UTC), load average start → end",
            lambda r: f"{r.started}, {r.load[0]:.1f} → {r.load[1]:.1f}",
        ),
        ("all Ready / `kubectl apply --server-side`", lambda r: r.ratio_line),
        ("operator CPU, apply → all Ready", cpu("operator")),
        ("backend process CPU, same window", lambda r: _backend_cpu(r)),
        (
            "kube-apiserver / etcd CPU, same window",
            lambda r: f"{cpu('kube-apiserver')(r)} / {cpu('etcd')(r)}",
        ),
        ("operator peak RSS (VmHWM) when all were Ready", lambda r: f"{r.rss_ready_mb:.0f} MB"),
        (
            "operator peak RSS at the end (after the quotas were counted)",
            lambda r: f"{r.rss_mb:.0f} MB",
        ),
        ("backend process peak RSS at the end", _backend_rss),
        ("sandboxes with exactly one key at the end", keys),
    ]
    for label, render in lines:
        rows.append(f"| {label} | " + " | ".join(cell(p, render) for p in order) + " |")
    return rows


def _backend_rss(r: Result) -> str:
    if r.backend_rss_mb == r.backend_rss_mb:  # not NaN
        return f"{r.backend_rss_mb:.0f} MB"
    return "—"


def _backend_cpu(r: Result) -> str:
    for name in ("pkcs11 worker", "moto server"):
        if name in r.cpu:
            return f"{r.cpu[name]:.1f} s ({name})"
    return "— (in the operator)"


def main() -> None:
    """Run every provider (in rotating order per round) and print a Markdown table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sandboxes", type=int, default=200)
    parser.add_argument(
        "--order",
        default=",".join(PROVIDERS),
        help="providers in the first round's order; each round starts one later",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--single",
        type=int,
        default=5,
        help="single sandboxes before the batch, as operator_provision --single (0: cold)",
    )
    parser.add_argument(
        "--requests", action="store_true", help="also print API requests per sandbox"
    )
    args = parser.parse_args()
    order = [p.strip() for p in args.order.split(",") if p.strip()]
    if sorted(order) != sorted(set(order)) or not set(order) <= set(PROVIDERS):
        parser.error(f"--order takes each of {', '.join(PROVIDERS)} at most once")
    results: list[Result] = []
    began = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    for round_ in range(args.rounds):
        turn = order[round_ % len(order) :] + order[: round_ % len(order)]
        for provider in turn:
            with tempfile.TemporaryDirectory(prefix=f"rsb-opkeys-{provider}-") as tmp_dir:
                results.append(
                    _run_one(
                        provider,
                        round_,
                        args.sandboxes,
                        args.requests,
                        Path(tmp_dir),
                        args.single,
                    )
                )
    print(
        f"\n{args.sandboxes} sandboxes per provider, {args.rounds} round(s), run order "
        f"{', '.join(r.provider for r in results)}; {began} to "
        f"{time.strftime('%H:%M:%S', time.gmtime())} UTC; {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; each provider on a fresh control plane\n"
    )
    print("\n".join(_table(results, order)))
    if any(r.keys is None or r.keys.exactly_one != r.keys.sandboxes for r in results):
        raise SystemExit("some sandbox has not exactly one key (the table marks it ✗)")


if __name__ == "__main__":
    main()
