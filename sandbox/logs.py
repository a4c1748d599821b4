"""Process logs (not the audit log): one structlog set-up for every regsandbox process.

The operator, the gateway, the audit service and the processes ``sandboxctl dev`` starts
all call :func:`configure_logging`, so their lines look alike:

- **JSON**, one object per line on stderr, in the cluster (``KUBERNETES_SERVICE_HOST``
  is set), when stderr is not a terminal, or with ``--log-format json``;
- a **readable** console line on a terminal, or with ``--log-format console``.

Standard-library logging (uvicorn, kopf, the Kubernetes client) goes through the same
renderer, so a kopf line is as parseable as ours. Values under keys that name secrets
(``token``, ``authorization``, ``cookie``, ``pin``, ``password``, ``secret`` …) are
replaced by ``[redacted]`` whatever logged them; the Kubernetes client and urllib3,
whose debug lines echo request and response bodies (a TokenReview's carries the token),
never log below WARNING.

Request ids: a line logged while a gateway request or an operator reconcile runs carries
its ``request_id``, the id the audit entries it causes carry too (:func:`bind_request_id`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import IO, Literal

import structlog

__all__ = [
    "LOG_FORMATS",
    "REDACTED",
    "LogFormat",
    "bind_request_id",
    "configure_logging",
    "log_handler",
    "redact_secrets",
    "resolve_format",
]

LogFormat = Literal["auto", "json", "console"]
"""``json``, ``console``, or ``auto`` (JSON unless stderr is a terminal outside a cluster)."""

LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")
"""The accepted ``--log-format`` values."""

REDACTED = "[redacted]"
"""What a secret-named value is logged as."""

_SECRET_KEY = re.compile(
    r"(^|_|-)(authorization|token|tokens|cookie|cookies|pin|password|passphrase|secret|"
    r"credentials|private_key|secret_key|session)($|_|-)",
    re.IGNORECASE,
)
_OURS = "_regsandbox_handler"
_QUIET = ("urllib3", "kubernetes", "httpx", "httpcore", "aiohttp.access", "botocore", "boto3")
"""Libraries whose debug lines carry request bodies or headers: WARNING and up only."""


def resolve_format(fmt: str = "auto", stream: IO[str] | None = None) -> Literal["json", "console"]:
    """The renderer ``fmt`` stands for on ``stream`` (default stderr).

    ``REGSANDBOX_LOG_FORMAT`` is used when ``fmt`` is ``auto``. Raises ``ValueError`` for
    an unknown format.
    """
    chosen = fmt.strip().lower()
    if chosen == "auto":
        chosen = os.environ.get("REGSANDBOX_LOG_FORMAT", "auto").strip().lower() or "auto"
    if chosen not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: want one of {', '.join(LOG_FORMATS)}")
    if chosen == "auto":
        out = stream if stream is not None else sys.stderr
        in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
        tty = bool(getattr(out, "isatty", lambda: False)())
        return "console" if tty and not in_cluster else "json"
    return "json" if chosen == "json" else "console"


def redact_secrets(
    logger: object, method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Replace the value of every key naming a secret (at any depth) by :data:`REDACTED`."""
    for key in list(event_dict):
        event_dict[key] = _redacted(key, event_dict[key])
    return event_dict


def bind_request_id(request_id: str) -> Callable[[], None]:
    """Put ``request_id`` on every log line of the current context from now on.

    The context is the thread or asyncio task (kopf runs each synchronous handler in a
    copy of its own, so a binding there ends with the handler). Returns the function
    that takes the binding off again, restoring what was bound before; calling it a
    second time, or from another context, does nothing.
    """
    tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
    done = False

    def unbind() -> None:
        nonlocal done
        if done:
            return
        done = True
        # From another context the token does not apply: that context ends on its own.
        with contextlib.suppress(ValueError):
            structlog.contextvars.reset_contextvars(**tokens)

    return unbind


def _redacted(key: object, value: object) -> object:
    if isinstance(key, str) and _SECRET_KEY.search(key) and value not in (None, "", REDACTED):
        return REDACTED
    if isinstance(value, dict):
        return {k: _redacted(k, v) for k, v in value.items()}
    return value


def _k8s_object(
    logger: object, method: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    """Name the object a kopf line is about (kopf passes it as the record's ``k8s_ref``)."""
    ref = getattr(event_dict.get("_record"), "k8s_ref", None)
    if isinstance(ref, dict):
        event_dict["object"] = {
            key: ref[key] for key in ("kind", "namespace", "name") if ref.get(key)
        }
    return event_dict


def _shared() -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a line is logged (test runners swap it)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def log_handler(fmt: str = "auto", stream: IO[str] | None = None) -> logging.Handler:
    """A handler rendering every record (structlog's and the standard library's) as ``fmt``.

    Without ``stream`` it writes to the process's stderr.
    """
    out = stream if stream is not None else sys.stderr
    renderer: structlog.types.Processor
    if resolve_format(fmt, out) == "json":
        renderer = structlog.processors.JSONRenderer()
        tail: list[structlog.types.Processor] = [structlog.processors.format_exc_info]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=bool(getattr(out, "isatty", bool)()))
        tail = []
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_shared(), _k8s_object],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redact_secrets,
                *tail,
                renderer,
            ],
        )
    )
    return handler


def configure_logging(
    level: str = "INFO",
    fmt: str = "auto",
    *,
    stream: IO[str] | None = None,
    filters: tuple[logging.Filter, ...] = (),
) -> logging.Handler:
    """Send structlog and standard-library logging to one handler on ``stream`` (stderr).

    ``level`` applies to the root logger (uvicorn, kopf and ours); ``filters`` are added to
    the handler (the operator drops kopf's per-tick timer lines). Calling it again
    replaces the handler it installed before (other handlers, such as a test runner's,
    stay), so a process may change its level once it knows its role. Returns the
    handler. Raises ``ValueError`` for an unknown level or format.
    """
    numeric = logging.getLevelName(level.strip().upper())
    if not isinstance(numeric, int):
        raise ValueError(f"log level {level!r}: want DEBUG, INFO, WARNING or ERROR")
    structlog.configure(
        processors=[*_shared(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = log_handler(fmt, stream)
    for extra in filters:
        handler.addFilter(extra)
    setattr(handler, _OURS, True)
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not getattr(h, _OURS, False)] + [handler]
    root.setLevel(numeric)
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    # uvicorn's own loggers carry handlers of their own; let them reach ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        named = logging.getLogger(name)
        named.handlers[:] = []
        named.propagate = True
    return handler
