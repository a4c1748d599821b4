"""Operator logs are one JSON object per line; kopf's lines name their object."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from operators.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_kopf_object_line_is_json_and_names_its_object(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO")
    ref = {
        "apiVersion": "regsandbox.io/v1alpha1",
        "kind": "Sandbox",
        "name": "fraud-model",
        "namespace": "tenant-lux-bank",
        "uid": "u-1",
    }
    adapter = logging.LoggerAdapter(logging.getLogger("kopf.objects"), {"k8s_ref": ref})
    adapter.error("Handler 'sandbox_provision' failed temporarily: waiting")
    logging.getLogger("kopf.activities").info("no object here")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    first, second = lines
    named = {"kind": "Sandbox", "namespace": "tenant-lux-bank", "name": "fraud-model"}
    assert first["object"] == named
    assert first["level"] == "error"
    assert first["event"].startswith("Handler 'sandbox_provision' failed")
    assert "object" not in second
