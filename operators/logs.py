"""The operator's logs: the shared set-up (:mod:`sandbox.logs`) without kopf's timer chatter."""

from __future__ import annotations

import logging

from sandbox.logs import configure_logging as configure_process_logging

__all__ = ["configure_logging"]


class _QuietTimers(logging.Filter):
    """Drop kopf's per-tick "Timer '…' succeeded." lines; failures still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Timer '") and message.endswith("succeeded."))


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Structured logs on stderr (JSON in the cluster or a pipe), kopf's routed through them."""
    configure_process_logging(level, fmt, filters=(_QuietTimers(),))
