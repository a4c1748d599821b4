"""The chart on a node of a test module's own, a sandbox granted a dataset on it, audit entries.

Also whether a node can run here at all (:func:`require_data_plane`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from audit.log import LogReader
from sandbox.devenv.chartstack import ChartStack, running_chart_stack
from sandbox.devenv.dataplane import unavailable_reason
from sandbox.devenv.stack import StackSettings
from sandbox.devenv.tenancy import add_tenant_with_dataset, dataset_manifest, grant_sandbox

from .pods import wait_for


def in_ci() -> bool:
    """Whether ``CI`` is set (there the data-plane tests must run, never be skipped)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_data_plane() -> None:
    """Skip the test where no node can run here — or, with ``CI=true``, fail it."""
    reason = unavailable_reason()
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI must run the data-plane tests, but: {reason}", pytrace=False)
        pytest.skip(f"no data plane on this machine: {reason}")


@contextmanager
def chart_stack(repo_root: Path, prefix: str) -> Iterator[ChartStack]:
    """The chart installed on a node of its own (one-second resync), removed on exit.

    Its directory is outside pytest's base temp: with several sessions at once, pytest
    renames the directories of older sessions away while they run, and ``down()`` must
    find its own.
    """
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    settings = StackSettings(directory=directory, repo=repo_root, resync_seconds=1.0)
    try:
        with running_chart_stack(settings) as stack:
            yield stack
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def granted_sandbox(
    stack: ChartStack, *, bucket: str, dataset: str, tenant: str, sandbox: str
) -> str:
    """A Dataset at ``bucket``/``claims/`` in the stack's MinIO, a Tenant, and a Sandbox of
    that tenant granted the dataset (bounded waits); the sandbox's namespace."""
    endpoint = stack.minio.endpoint
    manifest = dataset_manifest(dataset, bucket=bucket, prefix="claims/", endpoint=endpoint)
    add_tenant_with_dataset(stack.admin, wait_for, tenant=tenant, dataset=manifest)
    return grant_sandbox(
        stack.admin, wait_for, tenant=tenant, sandbox=sandbox, dataset=dataset, timeout=120
    )


def audit_entries(log: Path) -> list[dict[str, Any]]:
    """Every entry of the audit log at ``log``, as JSON."""
    reader = LogReader(log)
    try:
        return [reader.entry(i).model_dump(mode="json") for i in range(reader.size)]
    finally:
        reader.close()
