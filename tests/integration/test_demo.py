"""`make demo` runs the whole story on a fresh stack and succeeds.

Here on the stack of processes (``make demo MODE=processes``), which needs no node; the
same tour on the Helm chart installed on a node, with real workload pods, runs in
``tests/dataplane/test_chart_install.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_make_demo_succeeds(repo_root: Path) -> None:
    result = subprocess.run(
        ["make", "-s", "demo", "MODE=processes"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for who in ("platform engineer", "bank data scientist", "workload", "compliance officer"):
        assert who in output
    # the model goes into the outbox through the gateway, not straight into the bucket
    words = " ".join(output.split())  # the tour's lines wrap at the terminal's width
    assert "wrote its model into the sandbox's outbox through the gateway" in words
    assert "failed" not in output.split("regsandbox tour", 1)[-1]
