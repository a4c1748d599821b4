"""``sandboxctl --log-format/--log-level``: how the processes sandboxctl runs log.

The root command records the options; a command that runs a server or a local stack
(``gateway serve``, ``audit serve``, ``audit witness serve``, ``dev up``, ``dev demo``)
calls :func:`configure_process_logging` before it starts, so it logs like the operator
(see :mod:`sandbox.logs`). One-shot commands keep stderr for their own messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from sandbox.cli.output import EXIT_USAGE, fail
from sandbox.logs import configure_logging

__all__ = ["LogOptions", "configure_process_logging", "options", "set_options"]


@dataclass
class LogOptions:
    """The ``--log-format`` and ``--log-level`` given to ``sandboxctl``."""

    fmt: str = "auto"
    """``auto``, ``json`` or ``console``."""
    level: str | None = None
    """Level; None: INFO for servers."""


_options = LogOptions()


def set_options(fmt: str, level: str | None) -> None:
    """Record the root command's log options (called by ``sandboxctl``'s callback)."""
    _options.fmt, _options.level = fmt, level


def options() -> LogOptions:
    """The log options in force."""
    return _options


def configure_process_logging(default_level: str = "INFO") -> None:
    """Configure structured logs for a long-running command (usage error if invalid)."""
    try:
        configure_logging(_options.level or default_level, _options.fmt)
    except ValueError as exc:
        fail(f"--log-format/--log-level: {exc}", EXIT_USAGE)
