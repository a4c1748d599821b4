"""``sandboxctl evidence pack`` / ``verify``: arguments, exit codes, pure JSON output."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from audit.signing import generate_key_file
from sandbox.cli import app
from tests.evidence.history import History, Written, compliant, write_log

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _setup(tmp_path: Path) -> tuple[Written, Path, Path]:
    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    written = write_log(tmp_path / "log", history.events)
    key = tmp_path / "officer.key"
    signer = generate_key_file(key, "evidence.regsandbox.test/officer")
    vkey = tmp_path / "officer.vkey"
    vkey.write_text(signer.verifier.vkey + "\n")
    return written, key, vkey


def test_pack_then_verify(tmp_path: Path) -> None:
    written, key, vkey = _setup(tmp_path)
    pack = tmp_path / "pack"
    code, out, err = run(
        "evidence",
        "pack",
        "--log",
        str(written.path),
        "--sandbox",
        "bank-a/fraud",
        "-o",
        str(pack),
        "--key",
        str(key),
    )
    assert code == 0, err
    assert out == f"evidencepack/{pack} written\n"
    assert "aia-59-1-g: satisfied" in err
    code, out, err = run(
        "evidence", "verify", str(pack), "--vkey", str(vkey), "--vkey", str(written.vkey)
    )
    assert code == 0, err
    assert "pack verified" in err
    code, out, _ = run(
        "evidence",
        "verify",
        str(pack),
        "--vkey",
        str(vkey),
        "--vkey",
        written.vkey.read_text().strip(),
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
    written, key, vkey = _setup(tmp_path)
    pack = tmp_path / "pack"
    assert (
        run(
            "evidence",
            "pack",
            "--log",
            str(written.path),
            "--tenant",
            "bank-a",
            "-o",
            str(pack),
            "--key",
            str(key),
        )[0]
        == 0
    )
    (pack / "report.html").write_text("<html>all fine</html>")
    code, _, err = run(
        "evidence", "verify", str(pack), "--vkey", str(vkey), "--vkey", str(written.vkey)
    )
    assert code == 3
    assert "FAILED report.html" in err
    code, out, _ = run(
        "evidence",
        "verify",
        str(pack),
        "--vkey",
        str(vkey),
        "--vkey",
        str(written.vkey),
        "-o",
        "json",
    )
    assert code == 3
    doc = json.loads(out)
    assert doc["ok"] is False
    assert [p["item"] for p in doc["problems"]] == ["report.html"]


def test_errors_exit_1_or_2(tmp_path: Path) -> None:
    written, key, vkey = _setup(tmp_path)
    code, _, err = run("evidence", "verify", str(tmp_path / "nope"), "--vkey", str(vkey))
    assert code == 1
    assert "not a pack directory" in err
    code, _, err = run(
        "evidence",
        "pack",
        "--log",
        str(tmp_path / "missing"),
        "--tenant",
        "x",
        "-o",
        str(tmp_path / "p"),
        "--key",
        str(key),
    )
    assert code == 1
    assert "cannot read log" in err
    assert not (tmp_path / "p").exists()
    code, _, err = run(
        "evidence", "pack", "--log", str(written.path), "-o", str(tmp_path / "p"), "--key", str(key)
    )
    assert code == 2
    assert "--tenant" in err
    code, _, err = run(
        "evidence",
        "pack",
        "--log",
        str(written.path),
        "--tenant",
        "bank-z",
        "-o",
        str(tmp_path / "p"),
        "--key",
        str(key),
    )
    assert code == 1
    assert "no entry of tenant bank-z" in err
    assert not (tmp_path / "p").exists()
    code, _, err = run(
        "evidence",
        "pack",
        "--log",
        str(written.path),
        "--tenant",
        "bank-a",
        "--since",
        "yesterday",
        "-o",
        str(tmp_path / "p"),
        "--key",
        str(key),
    )
    assert code == 2


def test_keygen_makes_a_key_packs_verify_with(tmp_path: Path) -> None:
    history = History()
    compliant(history, "bank-a", "fraud", "card-claims")
    written = write_log(tmp_path / "log", history.events)
    key = tmp_path / "officer.key"
    code, out, err = run("evidence", "keygen", "--key", str(key), "--name", "ev.example/o")
    assert code == 0, err
    assert out.startswith("ev.example/o+")
    assert key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "officer.key.vkey").read_text() == out
    assert run("evidence", "keygen", "--key", str(key), "--name", "ev.example/o")[0] == 1
    pack = tmp_path / "pack"
    assert (
        run(
            "evidence",
            "pack",
            "--log",
            str(written.path),
            "--tenant",
            "bank-a",
            "-o",
            str(pack),
            "--key",
            str(key),
        )[0]
        == 0
    )
    code, _, err = run(
        "evidence", "verify", str(pack), "--vkey", out.strip(), "--vkey", str(written.vkey)
    )
    assert code == 0, err


def test_receipt_of_one_entry_verifies_with_the_audit_tools(tmp_path: Path) -> None:
    """The C2SP tlog-proof printed for one entry of a pack is checked by
    ``sandboxctl audit verify-proof`` with the log's key alone; an index the pack does
    not hold is refused."""
    written, key, _ = _setup(tmp_path)
    pack = tmp_path / "pack"
    code, _, err = run(
        "evidence",
        "pack",
        "--log",
        str(written.path),
        "--tenant",
        "bank-a",
        "-o",
        str(pack),
        "--key",
        str(key),
    )
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
        str(written.vkey),
    )
    assert code == 0, err
    code, _, err = run("evidence", "receipt", str(pack), "--index", "999999")
    assert code == 2
    assert "holds no entry 999999" in err
