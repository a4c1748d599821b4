"""Start, find and stop the server processes of a local control plane.

Every process is started in its own session with its output in a log file, and every
one carries the control plane's directory in its arguments. That lets ``down`` find
and stop them even when ``up`` was killed before it could record their PIDs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = [
    "free_port",
    "is_running",
    "log_tail",
    "processes_under",
    "spawn",
    "terminate",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(cmd: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` detached in a new session, appending its output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )


def _state(pid: int) -> str | None:
    """The one-letter process state from /proc, or None when the PID is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    return stat.rsplit(")", 1)[1].split()[0]


def is_running(pid: int) -> bool:
    """Whether ``pid`` is alive (a zombie waiting to be reaped counts as gone)."""
    state = _state(pid)
    return state is not None and state not in ("Z", "X")


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def processes_under(directory: Path, names: Iterable[str]) -> dict[int, str]:
    """PIDs of live processes named in ``names`` whose arguments mention ``directory``."""
    marker = str(directory.resolve()) + os.sep
    wanted = tuple(names)
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        argv = _cmdline(pid)
        if not argv or not is_running(pid):
            continue
        exe = Path(argv[0]).name
        match = next((n for n in wanted if exe == n or exe.startswith(f"{n}-")), None)
        if match and any(marker in arg for arg in argv[1:]):
            found[pid] = match
    return found


def terminate(pids: Iterable[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM ``pids``, wait up to ``timeout`` seconds, then SIGKILL what is left.

    Returns the PIDs that were running when called. Reaps children of this process
    so they do not linger as zombies.
    """
    alive = [p for p in pids if is_running(p)]
    for pid in alive:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(alive)
        if not any(is_running(p) for p in alive):
            break
        time.sleep(0.05)
    for pid in alive:
        if is_running(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(is_running(p) for p in alive):
        _reap(alive)
        time.sleep(0.05)
    _reap(alive)
    return alive


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def log_tail(log: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or a note that it is empty or missing."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {log})"
    tail = text.strip().splitlines()[-lines:]
    return "\n".join(tail) if tail else f"({log} is empty)"
