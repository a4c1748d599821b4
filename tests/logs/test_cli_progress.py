"""Progress of long CLI operations: shown on a terminal (stderr), never in a pipe or with
--quiet, and never mixed into what scripts parse (stdout)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

import audit.verify
from audit.entry import Actor, Event, Resource
from audit.log import AuditLog
from audit.signing import generate_key_file
from audit.verify import verify_log
from sandbox.cli.progress import Progress

ORIGIN = "audit.regsandbox.test/progress"
SANDBOXCTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "sandboxctl"
ENTRIES = 120


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("progress")
    signer = generate_key_file(root / "log.key", ORIGIN)
    AuditLog.create(root / "log", ORIGIN, signer).close()
    with AuditLog(root / "log", signer) as log:
        log.append_batch([_event(n) for n in range(ENTRIES)])
        log.publish_checkpoint()
    return root / "log"


def _event(n: int) -> Event:
    return Event(
        actor=Actor(user="alice"),
        action="dataset.read",
        resource=Resource(kind="Dataset", name=f"claims-{n}", tenant="acme"),
        outcome="success",
    )


def _run(args: list[str], *, tty: bool) -> tuple[int, str, str]:
    """Run sandboxctl with stderr on a pseudo-terminal (``tty``) or a pipe."""
    if not tty:
        done = subprocess.run(
            [str(SANDBOXCTL), *args], capture_output=True, text=True, timeout=120, check=False
        )
        return done.returncode, done.stdout, done.stderr
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TERM")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [str(SANDBOXCTL), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            data = os.read(primary, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    out = proc.stdout.read().decode() if proc.stdout else ""
    proc.wait(timeout=60)
    os.close(primary)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_verify_shows_progress_on_a_terminal(log_dir: Path) -> None:
    code, out, err = _run(["audit", "verify", "--log", str(log_dir)], tty=True)
    assert code == 0, err
    assert out.startswith(f"ok: {ENTRIES} entries verified")
    assert "verifying entries" in err


def test_verify_is_quiet_in_a_pipe_and_with_quiet(log_dir: Path) -> None:
    code, out, err = _run(["audit", "verify", "--log", str(log_dir)], tty=False)
    assert code == 0, err
    assert out.startswith(f"ok: {ENTRIES} entries verified")
    assert "verifying" not in err
    code, out, err = _run(["audit", "verify", "--log", str(log_dir), "--quiet"], tty=True)
    assert code == 0, err
    assert out.startswith(f"ok: {ENTRIES} entries verified")
    assert "verifying" not in err


def test_snapshot_shows_progress_only_on_a_terminal(log_dir: Path, tmp_path: Path) -> None:
    code, out, err = _run(
        ["audit", "snapshot", "--log", str(log_dir), "--to", str(tmp_path / "a")], tty=True
    )
    assert code == 0, err
    assert "copying the log" in err
    assert out.startswith(f"ok: {ENTRIES} entries")
    code, out, err = _run(
        ["audit", "snapshot", "--log", str(log_dir), "--to", str(tmp_path / "b")], tty=False
    )
    assert code == 0, err
    assert "copying" not in err
    assert out.startswith(f"ok: {ENTRIES} entries")
    code, _, err = _run(
        ["audit", "snapshot", "-q", "--log", str(log_dir), "--to", str(tmp_path / "c")], tty=True
    )
    assert code == 0, err
    assert "copying" not in err


def test_verify_reports_how_far_it_is(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit.verify, "PROGRESS_EVERY", 50)
    seen: list[tuple[int, int]] = []
    report = verify_log(log_dir, progress=lambda done, total: seen.append((done, total)))
    assert report.entries == ENTRIES
    assert seen == [(50, ENTRIES), (100, ENTRIES)]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_notes_reach_a_terminal_only_and_never_with_quiet() -> None:
    # What `dev up`, `dev tools --build`, `dev images` and `dev chart` report through.
    shown, piped, quiet = _Terminal(), io.StringIO(), _Terminal()
    for stream, is_quiet in ((shown, False), (piped, False), (quiet, True)):
        progress = Progress(quiet=is_quiet, stream=stream)
        progress.note("building kube-apiserver v1.31")
        with progress.task("copying", total=3) as advance:
            advance(2, None)
    assert "building kube-apiserver v1.31" in shown.getvalue()
    assert piped.getvalue() == quiet.getvalue() == ""
