"""``sandboxctl dev chart``: the chart in the foreground on a node of its own; Ctrl-C ends it.

Runs the command as a user would (a subprocess), waits for it to report the release
Ready, checks the release on the API server, then interrupts it and checks that no
process of its control plane or node is left.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import pytest
from kubernetes import client

from sandbox.devenv.controlplane import SERVERS, ControlPlane
from sandbox.devenv.dataplane import NODE_PROCESSES, unavailable_reason
from sandbox.devenv.processes import processes_under
from sandbox.kube.apply import get
from sandbox.testing import api_client

pytestmark = pytest.mark.dataplane


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):
        into.put(line)


def _ready(api: client.ApiClient, kind: str, name: str) -> int:
    obj = get(api, kind, name, "regsandbox-system") or {}
    return int((obj.get("status") or {}).get("readyReplicas") or 0)


def test_dev_chart_installs_the_release_and_ctrl_c_leaves_no_process(repo_root: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").strip().lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the data-plane tests, but: {reason}", pytrace=False)
        pytest.skip(f"no data plane on this machine: {reason}")
    directory = Path(tempfile.mkdtemp(prefix="regsandbox-dev-chart-"))
    stderr = (directory / "stderr.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.cli", "dev", "chart", "--dir", str(directory)],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 900
        while not any("Ready in" in line for line in output):
            assert proc.poll() is None, (directory / "stderr.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no Ready line: " + "".join(output)
            try:
                output.append(lines.get(timeout=1.0))
            except queue.Empty:
                continue
        ready_line = next(line for line in output if "Ready in" in line)
        assert "2 operators (one leads) with OPA sidecars, 2 gateways, audit service" in ready_line
        assert "localhost/regsandbox:" in ready_line
        assert "localhost/opa:" in ready_line

        api = api_client(directory / "cp" / "admin.kubeconfig")
        assert _ready(api, "Deployment", "regsandbox-operator") == 2  # leader + standby
        assert _ready(api, "Deployment", "regsandbox-gateway") == 2
        assert _ready(api, "StatefulSet", "regsandbox-audit") == 1

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=240) == 0, (directory / "stderr.log").read_text()[-3000:]
        while not lines.empty():
            output.append(lines.get())
        assert output[-1].strip() == "stopped", output
        left = processes_under(directory, (*SERVERS, *NODE_PROCESSES, "minio"))
        assert not left, left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ControlPlane(directory / "cp", data_plane=True).down()
        stderr.close()
        shutil.rmtree(directory, ignore_errors=True)
