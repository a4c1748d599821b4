"""A reconcile's id is on every log line logged while it runs, and on no line after.

kopf runs each synchronous handler in a copy of the calling context
(``contextvars.copy_context().run``); the handlers here are called the same way, and a
step (:class:`sandbox.lifecycle.step.Step`) writes to a real audit log in a temporary
directory, so the ids compared are the ones the log stored.
"""

from __future__ import annotations

import contextvars
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import structlog

from audit.client import LocalAuditSink
from audit.log import AuditLog
from audit.signing import Signer
from sandbox.lifecycle.platform import Platform
from sandbox.lifecycle.sandboxes.step import SandboxStep
from sandbox.logs import bind_request_id, configure_logging

ORIGIN = "test.regsandbox/reconcile-logs"
SIGNER = Signer.generate(ORIGIN)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    # Steps run outside a handler's copied context by other tests (tests/lifecycle/
    # test_step.py) may leave an id bound in this thread's context: start from none.
    structlog.contextvars.clear_contextvars()
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.contextvars.clear_contextvars()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    AuditLog.create(tmp_path / "log", ORIGIN, SIGNER).close()
    sink = LocalAuditSink(tmp_path / "log", SIGNER)
    none = cast(Any, None)  # a step touches only the audit sink and the actor
    yield Platform(
        api=none,
        engine=none,
        audit=sink,
        keys=none,
        storage=none,
        cluster_region="onprem:lu-national-1",
        cluster_jurisdiction="LU",
    )
    sink.close()


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _sandbox(uid: str) -> dict[str, Any]:
    meta = {"name": f"fraud-{uid}", "namespace": "tenant-acme", "uid": uid, "generation": 1}
    return {"metadata": meta, "spec": {}}


def _handler(platform: Platform, uid: str) -> str:
    """A reconcile as a handler runs it: lines from structlog and the standard library."""
    step = SandboxStep(platform, _sandbox(uid))
    structlog.get_logger("sandbox.keys.local").info("key.created", sandbox=uid)
    logging.getLogger("kopf.objects").info("patching %s", uid)
    step.log("sandbox.quarantined", "success")
    step.finish()
    structlog.get_logger("test").info("after finish", sandbox=uid)
    return step.reconcile_id


def test_lines_inside_a_reconcile_carry_its_id_and_its_entries_too(
    out: io.StringIO, platform: Platform
) -> None:
    first = contextvars.copy_context().run(_handler, platform, "u-1")
    second = contextvars.copy_context().run(_handler, platform, "u-2")
    structlog.get_logger("test").info("between handlers")
    assert first != second
    lines = {(d["event"], d.get("sandbox")): d for d in _lines(out)}
    assert lines["key.created", "u-1"]["request_id"] == first
    assert lines["patching u-1", None]["request_id"] == first
    assert lines["key.created", "u-2"]["request_id"] == second
    assert "request_id" not in lines["after finish", "u-1"]
    assert "request_id" not in lines["between handlers", None]
    audit = cast(LocalAuditSink, platform.audit).log
    stored = [audit.entry(i).request_id for i in range(audit.size)]
    assert stored == [first, second]


def test_unbinding_restores_the_outer_id_and_is_idempotent(out: io.StringIO) -> None:
    outer = bind_request_id("outer")
    inner = bind_request_id("inner")
    structlog.get_logger("test").info("inner line")
    inner()
    inner()
    structlog.get_logger("test").info("outer line")
    outer()
    structlog.get_logger("test").info("no id")
    ids = [d.get("request_id") for d in _lines(out)]
    assert ids == ["inner", "outer", None]
