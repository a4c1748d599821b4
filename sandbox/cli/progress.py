"""Progress of long ``sandboxctl`` operations, on a terminal only.

``audit verify``, ``audit snapshot``, the waits of ``export approve|reject|revoke`` and
the tool builds of ``sandboxctl dev`` report how far they are on stderr while stderr is
a terminal; in a pipe, a file or a CI log, or with ``--quiet``, they print nothing
extra, so their output stays what scripts parse. Results and errors are never progress:
they are printed as before, whatever the options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as _Bar

__all__ = ["Advance", "Progress", "QuietOpt"]

QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No progress on stderr (none is shown in a pipe either)."),
]

Advance = Callable[[int, int | None], None]
"""``advance(done, total)``: how much of a task is done (``total`` None: unchanged)."""


def _ignore(done: int, total: int | None = None) -> None:
    """Progress nobody sees."""


class Progress:
    """Progress lines and bars on ``stream`` (stderr), shown only on a terminal.

    ``quiet`` turns them off on a terminal too.
    """

    def __init__(self, *, quiet: bool = False, stream: IO[str] | None = None) -> None:
        """Report to ``stream`` (default: stderr) unless quiet or not a terminal."""
        self._out = stream if stream is not None else sys.stderr
        isatty = getattr(self._out, "isatty", None)
        self.enabled = not quiet and callable(isatty) and bool(isatty())
        """Whether anything is shown."""

    def _console(self) -> Console:
        return Console(file=self._out, force_terminal=True, highlight=False)

    def note(self, message: str) -> None:
        """One line saying what is being done now (``• message``)."""
        if self.enabled:
            self._console().print(f"[dim]•[/dim] {message}")

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Advance]:
        """A bar (``total`` known) or a spinner while the ``with`` body runs.

        Yields ``advance(done, total=None)``; the bar is cleared when the body ends.
        """
        if not self.enabled:
            yield _ignore
            return
        with _Bar(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console(),
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)

            def advance(done: int, new_total: int | None = None) -> None:
                if new_total is None:
                    bar.update(task, completed=done)
                else:
                    bar.update(task, completed=done, total=new_total)

            yield advance
