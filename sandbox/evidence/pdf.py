"""Printing a pack's HTML report to PDF with a headless Chromium (Debian's ``chromium``).

The PDF is for people who file documents: it is made from ``report.html`` when the pack
is written and listed in the signed manifest like every other file, so it cannot be
altered afterwards unnoticed. ``verify`` re-derives ``report.html`` byte for byte; it
cannot re-derive a browser's print, so the HTML stays the reference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["BROWSERS", "PdfError", "find_browser", "print_pdf"]

BROWSERS = ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome")
"""Programs tried, in order, when no browser is named."""


class PdfError(Exception):
    """The report could not be printed (no browser, or the browser failed)."""


def find_browser() -> str | None:
    """Path of the first of :data:`BROWSERS` on ``PATH``, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def print_pdf(html: Path, out: Path, *, browser: str | None = None, timeout: float = 120) -> None:
    """Print ``html`` to the new file ``out`` (A4 by the browser's default, no header or
    footer). Raises :class:`PdfError` with the browser's last words when it fails."""
    program = browser or find_browser()
    if program is None:
        raise PdfError(
            f"no headless browser found (tried {', '.join(BROWSERS)}); install Debian's chromium"
        )
    with tempfile.TemporaryDirectory(prefix="regsandbox-pdf-") as profile:
        args = [
            program,
            "--headless",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--user-data-dir={profile}",
            f"--print-to-pdf={out}",
            html.resolve().as_uri(),
        ]
        if os.geteuid() == 0:  # Chromium refuses root without it; the page is our own file
            args.insert(1, "--no-sandbox")
        try:
            result = subprocess.run(
                args, capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PdfError(f"{program} did not print the report: {exc}") from exc
    if result.returncode != 0 or not out.is_file() or out.read_bytes()[:5] != b"%PDF-":
        tail = "\n".join((result.stderr or "").strip().splitlines()[-5:])
        raise PdfError(f"{program} did not print the report (exit {result.returncode}): {tail}")
