"""The shipped policies pass Regal's lint, with the pinned Regal and the repo's config."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandbox.devenv.toolchain import TOOLS, bin_dir

from .conftest import POLICY_DIR, REPO

pytestmark = pytest.mark.opa

CONFIG = REPO / ".regal" / "config.yaml"


@pytest.fixture(scope="module")
def regal_binary() -> Path:
    """The pinned Regal binary; the test fails (not skips) when it is missing."""
    path = bin_dir() / TOOLS["regal"].filename
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"Regal binary {path} is missing: run `make tools` to build it", pytrace=False)
    return path


@pytest.fixture(scope="module")
def report(regal_binary: Path) -> dict[str, Any]:
    """Regal's JSON report for policies/, linted with the repository's configuration."""
    args = ["lint", "--format", "json", "--config-file", str(CONFIG), str(POLICY_DIR)]
    result = subprocess.run(
        [str(regal_binary), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    # 0: clean; 2: warnings, 3: errors (the report lists them). Anything else is a crash.
    assert result.returncode in (0, 2, 3), result.stdout + result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def _describe(violation: dict[str, Any]) -> str:
    where = violation["location"]
    text = (where.get("text") or "").strip()
    return (
        f"{where['file']}:{where['row']}:{where['col']}: {violation['category']}/"
        f"{violation['title']}: {violation['description']}: {text[:100]}"
    )


def test_policies_pass_regal_lint(report: dict[str, Any]) -> None:
    found = sorted(_describe(v) for v in report.get("violations", []))
    assert not found, f"Regal found {len(found)} violation(s):\n" + "\n".join(found)


def test_regal_lints_every_policy_file(report: dict[str, Any]) -> None:
    # The config ignores rules for some files; it must never drop a file altogether.
    expected = len(list(POLICY_DIR.rglob("*.rego")))
    assert report["summary"]["files_scanned"] == expected
