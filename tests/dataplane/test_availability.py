"""Where no node can run, the data-plane tests say why: skipped locally, failed in CI.

These run everywhere (they start no node): a pytest session is run on a data-plane test
with the system commands taken off PATH, so the machine looks unable to run a node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.devenv import dataplane

TARGET = "tests/dataplane/test_node.py::test_status_shows_the_node"


def _session(repo_root: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "bin"
    empty.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if k != "CI"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", TARGET, "-p", "no:cacheprovider", "-rs", "-q"],
        cwd=repo_root,
        env={**clean, "PATH": str(empty), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_reason_names_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    reason = dataplane.unavailable_reason()
    assert reason is not None
    if os.geteuid() == 0:
        assert "missing commands" in reason
        assert "containerd" in reason
    else:
        assert "root" in reason


def test_unavailable_data_plane_is_skipped_with_the_reason(repo_root: Path, tmp_path: Path) -> None:
    result = _session(repo_root, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 skipped" in result.stdout
    assert "no data plane on this machine" in result.stdout
    assert "passed" not in result.stdout


def test_unavailable_data_plane_fails_in_ci(repo_root: Path, tmp_path: Path) -> None:
    result = _session(repo_root, tmp_path, CI="true")
    assert result.returncode != 0
    assert "CI must run the data-plane tests" in result.stdout
    assert "skipped" not in result.stdout


def test_dev_up_data_plane_says_why_it_cannot_and_starts_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    directory = tmp_path / "dev"
    result = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "dev", "up", "--data-plane", "--dir", str(directory)],
        env={**os.environ, "PATH": str(empty)},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    expected = "missing commands" if os.geteuid() == 0 else "needs root"
    assert expected in result.stderr
    assert not (directory / "state.json").exists()
    assert not (directory / "node" / "ns").exists()
