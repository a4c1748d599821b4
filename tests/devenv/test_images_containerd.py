"""Local images imported into a real containerd and run there with runc.

A containerd of its own (Debian's, CRI off) is started in a private mount namespace, so
its overlay mounts vanish with it, with state under the test's tmp directory.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.devenv import images
from sandbox.devenv.toolchain import TOOLS

pytestmark = pytest.mark.dataplane


def _ctr(socket: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ctr", "--address", str(socket), "-n", "k8s.io", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The socket of a containerd started for this module."""
    missing = [c for c in ("containerd", "ctr", "runc", "unshare") if shutil.which(c) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (apt install containerd runc)")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root (mounts, cgroups)")
    directory = tmp_path_factory.mktemp("ctd")
    socket = directory / "containerd.sock"
    config = directory / "config.toml"
    config.write_text(
        "\n".join(
            [
                "version = 2",
                f'root = "{directory / "root"}"',
                f'state = "{directory / "state"}"',
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                "[grpc]",
                f'  address = "{socket}"',
                "[ttrpc]",
                f'  address = "{socket}.ttrpc"',
                "",
            ]
        )
    )
    log = (directory / "containerd.log").open("wb")
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "containerd", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while _ctr(socket, "version", timeout=10).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (directory / "containerd.log").read_text()[-2000:]
                pytest.fail(f"containerd did not start:\n{tail}")
            time.sleep(0.2)
        yield socket
    finally:
        for task in _ctr(socket, "tasks", "ls", "-q").stdout.split():
            _ctr(socket, "tasks", "kill", "-s", "SIGKILL", task)
            _ctr(socket, "tasks", "delete", "-f", task)
        for container in _ctr(socket, "containers", "ls", "-q").stdout.split():
            _ctr(socket, "containers", "delete", container)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_imported_busybox_runs_as_nobody_and_pause_stops_on_sigterm(containerd: Path) -> None:
    refs = images.import_images(containerd, ["pause", "busybox"])
    assert refs == ["localhost/pause:3.10", "localhost/busybox:1.35"]
    listed = _ctr(containerd, "images", "ls", "-q").stdout.split()
    assert set(refs) <= set(listed)

    # The image's /etc/passwd maps nobody to 65534, as pods with runAsUser expect.
    run = _ctr(
        containerd,
        "run",
        "--rm",
        "localhost/busybox:1.35",
        "id-check",
        "su",
        "-s",
        "/bin/sh",
        "nobody",
        "-c",
        "id -u; id -g",
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["65534", "65534"]

    # pause runs as its image's user (65535) and exits 0 on SIGTERM, as the kubelet stops it.
    started = _ctr(containerd, "run", "-d", "localhost/pause:3.10", "pause-check")
    assert started.returncode == 0, started.stderr
    assert _task(containerd, "pause-check")[1] == "RUNNING"
    pid = _task(containerd, "pause-check")[0]
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert uid_line.split()[1:] == ["65535"] * 4
    assert _ctr(containerd, "tasks", "kill", "-s", "SIGTERM", "pause-check").returncode == 0
    deadline = time.monotonic() + 20
    while _task(containerd, "pause-check")[1] != "STOPPED":
        assert time.monotonic() < deadline, "pause ignored SIGTERM"
        time.sleep(0.1)
    # `ctr tasks delete` exits with the task's exit status.
    deleted = _ctr(containerd, "tasks", "delete", "pause-check")
    assert deleted.returncode == 0, deleted.stderr
    _ctr(containerd, "containers", "delete", "pause-check")


def _task(socket: Path, name: str) -> tuple[int, str]:
    """PID and status of task ``name`` from ``ctr tasks ls``."""
    for line in _ctr(socket, "tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == name:
            return int(fields[1]), fields[2]
    raise AssertionError(f"no task {name}")


def _dockerfile_runtime(dockerfile: Path) -> dict[str, object]:
    """ENV, USER and CMD of the Dockerfile's final stage."""
    text = dockerfile.read_text().replace("\\\n", " ")
    final = text.rsplit("\nFROM ", 1)[1]
    env: dict[str, str] = {}
    user = cmd = None
    for line in final.splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword == "ENV":
            for assignment in shlex.split(rest):
                name, _, value = assignment.partition("=")
                env[name] = value
        elif keyword == "USER":
            user = rest.strip()
        elif keyword == "CMD":
            cmd = json.loads(rest)
    return {"env": env, "user": user, "cmd": cmd}


def test_regsandbox_image_runs_what_the_dockerfile_and_the_chart_run(
    containerd: Path, repo_root: Path
) -> None:
    archive = images.build_image("regsandbox", repo=repo_root)
    ref = images.import_archive(containerd, archive)
    assert ref == images.image_ref("regsandbox", repo_root)
    config = json.loads(
        subprocess.run(
            ["skopeo", "inspect", "--config", f"oci-archive:{archive}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["config"]
    wanted = _dockerfile_runtime(repo_root / "Dockerfile")
    assert config["User"] == wanted["user"]
    assert config["Cmd"] == wanted["cmd"]
    image_env = dict(e.split("=", 1) for e in config["Env"])
    for name, value in wanted["env"].items():  # type: ignore[attr-defined]
        if name == "PATH":  # the Dockerfile prepends the venv to the base image's PATH
            assert image_env["PATH"].startswith(value.replace(":$PATH", ":")), image_env
        else:
            assert image_env[name] == value, name

    # Every program the chart's containers start, on a read-only root as the chart runs them.
    script = "; ".join(
        [
            "set -e",
            "id -u",
            "sandbox-operator --help >/dev/null",
            "sandboxctl gateway serve --help >/dev/null",
            "sandboxctl audit serve --help >/dev/null",
            "sandboxctl audit init --help >/dev/null",
            'test -f "$REGSANDBOX_POLICY_DIR/main/main.rego"',
            '"$REGSANDBOX_OPA_CHECK_BINARY" version',
        ]
    )
    run = _ctr(
        containerd,
        "run",
        "--rm",
        "--read-only",
        ref,
        "regsandbox-check",
        "sh",
        "-c",
        script,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "10001"
    assert f"Version: {TOOLS['opa'].version.removeprefix('v')}" in lines
