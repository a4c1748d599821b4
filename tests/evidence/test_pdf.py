"""``sandboxctl evidence pack --pdf``: the report printed by Debian's chromium, signed with
the pack, and a clear refusal when no browser is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audit.note import Note
from sandbox.evidence.pdf import find_browser
from tests.evidence.cli import officer, run

_MISSING = "Debian's chromium is not installed (`make deps` installs it)"


def _pack(tmp_path: Path) -> tuple[int, str, Path, list[str]]:
    officer_ = officer(tmp_path)
    pack = tmp_path / "pack"
    code, _, err = officer_.pack(pack, "--tenant", "bank-a", "--pdf")
    return code, err, pack, officer_.vkeys


@pytest.mark.skipif(find_browser() is None and not os.environ.get("CI"), reason=_MISSING)
def test_pdf_is_printed_signed_and_verified(tmp_path: Path) -> None:
    if find_browser() is None:
        pytest.fail(_MISSING, pytrace=False)
    code, err, pack, vkeys = _pack(tmp_path)
    assert code == 0, err
    pdf = (pack / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert b"%%EOF" in pdf[-1024:]
    manifest = Note.parse((pack / "manifest").read_bytes()).text
    assert " report.pdf\n" in manifest
    code, _, err = run("evidence", "verify", str(pack), *vkeys)
    assert code == 0, err
    # the signature covers the PDF too
    (pack / "report.pdf").write_bytes(pdf.replace(b"%PDF-", b"%PDF-9", 1))
    code, out, _ = run("evidence", "verify", str(pack), *vkeys, "-o", "json")
    assert code == 3
    assert "report.pdf" in out


def test_pdf_without_a_browser_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, err, pack, _ = _pack(tmp_path)
    assert code != 0
    assert "--pdf needs a headless browser" in err
    assert not pack.exists()
