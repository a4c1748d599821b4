"""Structured JSON logs for the operator, with kopf's standard logging routed through them."""

from __future__ import annotations

import logging
import sys

import structlog

__all__ = ["configure_logging"]


class _QuietTimers(logging.Filter):
    """Drop kopf's per-tick "Timer '…' succeeded." lines; failures still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Timer '") and message.endswith("succeeded."))


def _kopf_object(
    logger: object, method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Name the object a kopf log line is about (kopf passes it as ``k8s_ref``)."""
    ref = getattr(event_dict.get("_record"), "k8s_ref", None)
    if isinstance(ref, dict):
        event_dict["object"] = {
            key: ref[key] for key in ("kind", "namespace", "name") if ref.get(key)
        }
    return event_dict


def configure_logging(level: str = "INFO") -> None:
    """One JSON object per line on stderr, for our logs and for kopf's alike."""
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, _kopf_object],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    handler.addFilter(_QuietTimers())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "kubernetes", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
