"""``sandboxctl dev``: up, status, user, down — including after a killed ``up``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.devenv import processes
from sandbox.devenv.controlplane import SERVERS, ControlPlane
from sandbox.devenv.toolchain import TOOLS

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "sandbox.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=180, check=False, env=env
    )


def test_up_status_user_down_leaves_no_process(tmp_path: Path, control_plane: ControlPlane) -> None:
    # A second control plane side by side with the session's one: ports must not clash.
    directory = tmp_path / "dev"
    started = run("dev", "up", "--dir", str(directory))
    assert started.returncode == 0, started.stderr
    assert "export KUBECONFIG=" in started.stdout
    state = json.loads((directory / "state.json").read_text())
    assert state["apiserver_port"] != control_plane.load_state().apiserver_port  # type: ignore[union-attr]

    status = run("dev", "status", "--dir", str(directory), "-o", "json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["ready"] is True

    user = run("dev", "user", "dana", "--group", "tenant-a", "--dir", str(directory))
    assert user.returncode == 0, user.stderr
    kubeconfig = Path(user.stdout.strip())
    assert kubeconfig == (directory / "users" / "dana.kubeconfig").resolve()
    assert kubeconfig.stat().st_mode & 0o077 == 0, "a kubeconfig with a private key must be 0600"
    kubectl = Path(os.environ.get("REGSANDBOX_BIN_DIR", Path.home() / ".cache/regsandbox/bin"))
    who = subprocess.run(
        [
            str(kubectl / TOOLS["kubectl"].filename),
            "--kubeconfig",
            str(kubeconfig),
            "auth",
            "whoami",
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert who.returncode == 0, who.stderr
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == "dana"

    stopped = run("dev", "down", "--dir", str(directory))
    assert stopped.returncode == 0, stopped.stderr
    assert "kube-apiserver" in stopped.stdout
    assert processes.processes_under(directory, SERVERS) == {}
    again = run("dev", "down", "--dir", str(directory))
    assert again.returncode == 0
    assert "nothing was running" in again.stdout
    assert run("dev", "status", "--dir", str(directory)).returncode == 1


def test_down_cleans_up_after_killed_up(tmp_path: Path) -> None:
    directory = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI, "dev", "up", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = set(processes.processes_under(directory, SERVERS).values())
        if "kube-apiserver" in found:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("kube-apiserver never started")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert processes.processes_under(directory, SERVERS), "servers should outlive the killed CLI"
    assert run("dev", "down", "--dir", str(directory)).returncode == 0
    assert processes.processes_under(directory, SERVERS) == {}


def test_failing_server_is_named_with_its_log(tmp_path: Path) -> None:
    # A stand-in etcd that fails at once: the only way to make the real one fail on cue.
    # It exercises the error path of `dev up`, not Kubernetes behaviour.
    bins = tmp_path / "bin"
    bins.mkdir()
    real = Path(os.environ.get("REGSANDBOX_BIN_DIR", Path.home() / ".cache/regsandbox/bin"))
    for name in SERVERS:
        target = bins / TOOLS[name].filename
        if name == "etcd":
            target.write_text(
                "#!/bin/sh\necho 'etcd: listen tcp: bind: address already in use' >&2\nexit 7\n"
            )
            target.chmod(0o755)
        else:
            target.symlink_to(real / TOOLS[name].filename)
    env = {**os.environ, "REGSANDBOX_BIN_DIR": str(bins)}
    result = run("dev", "up", "--dir", str(tmp_path / "dev"), env=env)
    assert result.returncode == 1
    assert "etcd exited with code 7" in result.stderr
    assert "address already in use" in result.stderr
    assert processes.processes_under(tmp_path / "dev", SERVERS) == {}
