"""Kill a gateway or the audit service of the chart while a sandbox's pod reads.

The scenarios of the data-plane test ``tests/dataplane/test_gateway_audit_ha.py`` and of
``bench/gateway_audit_ha.py``, on a :class:`~sandbox.devenv.chartstack.ChartStack`:

- :func:`reading_sandbox`: the finance example's sandbox, Ready with its dataset
  granted, and its workload pod;
- :func:`kill_gateway`: one gateway pod deleted with no grace period while the pod reads
  through the gateway Service, until the Deployment has replaced it;
- :func:`kill_audit`: the audit service's pod deleted the same way, until the
  StatefulSet has restarted it and reads succeed again.

Each returns every answer the reader got (:class:`~sandbox.devenv.readloop.Answer`) and
where the kill and the recovery fell in them; what to conclude is the caller's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client

from audit.log import LogReader
from sandbox.devenv.chartstack import ChartStack
from sandbox.devenv.readloop import Answer, ReadLoop
from sandbox.devenv.toolchain import tool_path
from sandbox.devenv.workload import TOKEN_DIR
from sandbox.errors import ControlPlaneError
from sandbox.kube.apply import apply, get

__all__ = [
    "OBJECT",
    "SAMPLE",
    "Kill",
    "ReadingSandbox",
    "kill_audit",
    "kill_gateway",
    "read_entries",
    "reading_sandbox",
]

OBJECT = "/v1/datasets/lux-bank-transactions/objects/part-0001.csv"
"""The sample object the reader reads (seeded by :func:`sandbox.devenv.stack.seed_storage`)."""
SAMPLE = b"txn_id,amount,merchant,label\n1,12.50,m1,0\n2,9800.00,m9,1\n"
"""Its bytes."""

_HOME = "tenant-lux-bank"
_T = TypeVar("_T")


def _wait(check: Callable[[], _T | None], timeout: float, what: str) -> _T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


@dataclass(frozen=True)
class ReadingSandbox:
    """A sandbox whose workload pod may read :data:`OBJECT`."""

    stack: ChartStack
    namespace: str
    pod: str

    def loop(self) -> ReadLoop:
        """A read loop in the workload pod, started."""
        return ReadLoop(
            tool_path("kubectl"),
            self.stack.plane.admin_kubeconfig,
            self.namespace,
            self.pod,
            self.stack.gateway_url + OBJECT,
            f"{TOKEN_DIR}/token",
        ).start()


def reading_sandbox(stack: ChartStack, repo: Path, name: str = "fraud-model") -> ReadingSandbox:
    """The finance example's sandbox (as ``name``), Ready and granted, with its pod."""
    [sandbox] = yaml.safe_load_all((repo / "examples/finance/sandbox-fraud-model.yaml").read_text())
    sandbox["metadata"]["name"] = name
    sandbox["spec"]["lifetime"] = {"ttl": "2h"}
    _wait(lambda: get(stack.admin, "Namespace", _HOME), 120, f"the tenant's home {_HOME}")
    apply(stack.admin, sandbox)

    def granted() -> dict[str, Any] | None:
        status = (get(stack.admin, "Sandbox", name, _HOME) or {}).get("status") or {}
        ok = any(
            d["name"] == "lux-bank-transactions" and d["granted"]
            for d in status.get("datasets") or []
        )
        return status if ok and status.get("ready") in (True, "True") else None

    status = _wait(granted, 120, f"sandbox {name} Ready with its dataset granted")
    workload = stack.workload(str(status["namespace"]))
    return ReadingSandbox(stack, workload.namespace, workload.pod)


@dataclass(frozen=True)
class Kill:
    """What the reader saw around one kill."""

    victim: str
    """The pod killed."""
    killed_after: int
    """Sequence number of the last answer before the kill."""
    recovered_after: int
    """Sequence number of the last answer when the replacement was Ready."""
    recovery_seconds: float
    """From the kill to the replacement Ready (as this machine saw it)."""
    answers: list[Answer]
    """Every answer of the run."""


def _ready_pods(api: client.ApiClient, namespace: str, component: str) -> list[str]:
    pods = (
        client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/component={component}")
        .items
    )
    return sorted(
        p.metadata.name
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    )


def _oks_after(loop: ReadLoop, n: int, count: int) -> bool:
    return sum(1 for a in loop.answers if a.n > n and a.status == 200) >= count


def _last(loop: ReadLoop) -> int:
    answers = loop.answers
    return answers[-1].n if answers else 0


def _kill(
    reading: ReadingSandbox,
    component: str,
    replicas: int,
    *,
    warmup: int,
    after: int,
    outage: Callable[[ReadLoop, int], bool] | None = None,
) -> Kill:
    api, namespace = reading.stack.admin, reading.stack.release.namespace
    _wait(
        lambda: len(_ready_pods(api, namespace, component)) == replicas,
        180,
        f"{replicas} Ready {component} pod(s)",
    )
    loop = reading.loop()
    try:
        _wait(lambda: _oks_after(loop, 0, warmup), 120, f"{warmup} reads")
        victim = _ready_pods(api, namespace, component)[0]
        uid = client.CoreV1Api(api).read_namespaced_pod(victim, namespace).metadata.uid
        killed_after = _last(loop)
        started = time.monotonic()
        client.CoreV1Api(api).delete_namespaced_pod(victim, namespace, grace_period_seconds=0)
        if outage is not None:
            _wait(lambda: outage(loop, killed_after), 60, f"the reader to notice {victim} gone")
        # A StatefulSet's replacement has the same name: wait for a new uid, Ready.
        _wait(
            lambda: (
                len(_ready_pods(api, namespace, component)) == replicas
                and uid not in _uids(api, namespace, component)
            ),
            240,
            f"a Ready replacement of {victim}",
        )
        recovery = time.monotonic() - started
        recovered_after = _last(loop)
        _wait(lambda: _oks_after(loop, recovered_after, after), 120, f"{after} reads after")
    finally:
        answers = loop.stop()
    if not answers:
        raise ControlPlaneError(f"the read loop got no answer: {loop.errors}")
    return Kill(victim, killed_after, recovered_after, recovery, answers)


def _uids(api: client.ApiClient, namespace: str, component: str) -> set[str]:
    pods = (
        client.CoreV1Api(api)
        .list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/component={component}")
        .items
    )
    return {p.metadata.uid for p in pods}


def kill_gateway(reading: ReadingSandbox, *, warmup: int = 20, after: int = 20) -> Kill:
    """Delete one of the two gateway pods (no grace period) while the pod reads."""
    return _kill(
        reading, "gateway", reading.stack.release.gateway_replicas, warmup=warmup, after=after
    )


def kill_audit(reading: ReadingSandbox, *, warmup: int = 10, after: int = 10) -> Kill:
    """Delete the audit service's pod (no grace period) while the pod reads."""

    def refused(loop: ReadLoop, since: int) -> bool:
        return any(a.status != 200 for a in loop.answers if a.n > since)

    return _kill(reading, "audit", 1, warmup=warmup, after=after, outage=refused)


def read_entries(log: Path) -> dict[str, list[dict[str, Any]]]:
    """The log's ``dataset.read`` entries by request id."""
    reader = LogReader(log)
    try:
        found: dict[str, list[dict[str, Any]]] = {}
        for i in range(reader.size):
            entry = reader.entry(i).model_dump(mode="json")
            if entry["action"] == "dataset.read" and entry.get("request_id"):
                found.setdefault(str(entry["request_id"]), []).append(entry)
        return found
    finally:
        reader.close()
