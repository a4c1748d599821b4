"""``sandboxctl evidence pack`` / ``verify``: arguments, exit codes, pure JSON output."""

from __future__ import annotations

import json
from pathlib import Path

from tests.evidence.cli import Officer, officer, run


def test_pack_then_verify(tmp_path: Path) -> None:
    officer_ = officer(tmp_path)
    pack = tmp_path / "pack"
    code, out, err = officer_.pack(pack, "--sandbox", "bank-a/fraud")
    assert code == 0, err
    assert out == f"evidencepack/{pack} written\n"
    assert "aia-59-1-g: satisfied" in err
    code, out, err = officer_.verify(pack)
    assert code == 0, err
    assert "pack verified" in err
    # a vkey given as text rather than as a file
    code, out, _ = run(
        "evidence",
        "verify",
        str(pack),
        "--vkey",
        str(officer_.vkey),
        "--vkey",
        officer_.written.vkey.read_text().strip(),
        "-o",
        "json",
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["ok"] is True
    assert doc["pack"]["scope"] == {
        "tenant": "bank-a",
        "sandbox": "fraud",
        "since": None,
        "until": None,
    }
    assert {f["status"] for f in doc["findings"]} == {"satisfied"}


def test_verify_failure_exits_3_naming_the_item(tmp_path: Path) -> None:
    officer_ = officer(tmp_path)
    pack = tmp_path / "pack"
    assert officer_.pack(pack, "--tenant", "bank-a")[0] == 0
    (pack / "report.html").write_text("<html>all fine</html>")
    code, _, err = officer_.verify(pack)
    assert code == 3
    assert "FAILED report.html" in err
    code, out, _ = officer_.verify(pack, "-o", "json")
    assert code == 3
    doc = json.loads(out)
    assert doc["ok"] is False
    assert [p["item"] for p in doc["problems"]] == ["report.html"]


def test_errors_exit_1_or_2(tmp_path: Path) -> None:
    officer_ = officer(tmp_path)
    out = tmp_path / "p"
    code, _, err = run("evidence", "verify", str(tmp_path / "nope"), "--vkey", str(officer_.vkey))
    assert code == 1
    assert "not a pack directory" in err
    code, _, err = officer_.pack(out, "--tenant", "x", log=tmp_path / "missing")
    assert code == 1
    assert "cannot read log" in err
    assert not out.exists()
    code, _, err = officer_.pack(out)
    assert code == 2
    assert "--tenant" in err
    code, _, err = officer_.pack(out, "--tenant", "bank-z")
    assert code == 1
    assert "no entry of tenant bank-z" in err
    assert not out.exists()
    code, _, err = officer_.pack(out, "--tenant", "bank-a", "--since", "yesterday")
    assert code == 2


def test_keygen_makes_a_key_packs_verify_with(tmp_path: Path) -> None:
    log = officer(tmp_path).written
    key = tmp_path / "keygen.key"
    code, out, err = run("evidence", "keygen", "--key", str(key), "--name", "ev.example/o")
    assert code == 0, err
    assert out.startswith("ev.example/o+")
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keygen.key.vkey").read_text() == out
    assert run("evidence", "keygen", "--key", str(key), "--name", "ev.example/o")[0] == 1
    made = Officer(log, key, tmp_path / "keygen.key.vkey")
    pack = tmp_path / "pack"
    assert made.pack(pack, "--tenant", "bank-a")[0] == 0
    code, _, err = run(
        "evidence", "verify", str(pack), "--vkey", out.strip(), "--vkey", str(log.vkey)
    )
    assert code == 0, err


def test_receipt_of_one_entry_verifies_with_the_audit_tools(tmp_path: Path) -> None:
    """The C2SP tlog-proof printed for one entry of a pack is checked by
    ``sandboxctl audit verify-proof`` with the log's key alone; an index the pack does
    not hold is refused."""
    officer_ = officer(tmp_path)
    pack = tmp_path / "pack"
    code, _, err = officer_.pack(pack, "--tenant", "bank-a")
    assert code == 0, err
    index = json.loads((pack / "entries.ndjson").read_bytes().splitlines()[2])["index"]
    entry = tmp_path / "entry.json"
    code, proof, err = run(
        "evidence", "receipt", str(pack), "--index", str(index), "--entry-out", str(entry)
    )
    assert code == 0, err
    assert proof.startswith(f"c2sp.org/tlog-proof@v1\nindex {index}\n")
    (tmp_path / "proof").write_text(proof)
    code, _, err = run(
        "audit",
        "verify-proof",
        "--proof",
        str(tmp_path / "proof"),
        "--entry",
        str(entry),
        "--vkey",
        str(officer_.written.vkey),
    )
    assert code == 0, err
    code, _, err = run("evidence", "receipt", str(pack), "--index", "999999")
    assert code == 2
    assert "holds no entry 999999" in err
