"""Fixtures shared by the audit tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def vectors() -> Path:
    """The known-answer vectors vendored in tests/vectors (or $REGSANDBOX_VECTORS).

    Missing vectors fail the test run: they are what pins the formats.
    """
    env = os.environ.get("REGSANDBOX_VECTORS")
    root = Path(env) if env else Path(__file__).resolve().parents[1] / "vectors"
    if not (root / "README.md").is_file():
        pytest.fail(f"known-answer vectors not found at {root}; set REGSANDBOX_VECTORS")
    return root
