"""``sandboxctl audit …``: what a compliance officer runs, exit codes included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sandbox.cli import app

from .helpers import ORIGIN, event

runner = CliRunner()


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, ["audit", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def _events(n: int, start: int = 0, tenant: str = "bank-a") -> str:
    return "".join(
        event(i, tenant=tenant).model_dump_json(exclude={"nonce", "event_id"}) + "\n"
        for i in range(start, start + n)
    )


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "log"
    code, out, err = run("init", "--log", str(path), "--origin", ORIGIN)
    assert code == 0, err
    assert out == f"log/{ORIGIN} created\n"
    code, out, _ = run("append", "--log", str(path), stdin=_events(5) + _events(3, 5, "clinic"))
    assert code == 0
    assert out.split() == [str(i) for i in range(8)]
    return path


def test_init_refuses_an_existing_log(log: Path) -> None:
    code, _, err = run("init", "--log", str(log), "--origin", ORIGIN)
    assert code == 1
    assert "already holds an audit log" in err


def test_bad_input_is_refused_and_changes_nothing(log: Path) -> None:
    before = (log / "entries.wal").read_bytes()
    code, _, err = run("append", "--log", str(log), stdin=_events(1) + "{not json\n")
    assert code == 1
    assert "line 2" in err
    big = json.loads(_events(1))
    big["details"] = {"blob": "x" * 70000}
    code, _, err = run("append", "--log", str(log), stdin=json.dumps(big) + "\n")
    assert code == 1
    assert "65536-byte limit" in err
    code, _, err = run(
        "append", "--log", str(log), "--key", str(log / "log.vkey"), stdin=_events(1)
    )
    assert code == 1
    assert (log / "entries.wal").read_bytes() == before


def test_verify_passes_then_names_the_damaged_entry(log: Path, tmp_path: Path) -> None:
    vkey = (log / "log.vkey").read_text().strip()
    code, out, _ = run("verify", "--log", str(log), "--vkey", vkey)
    assert code == 0
    assert out.startswith("ok: 8 entries verified")
    copy = tmp_path / "copy"
    shutil.copytree(log, copy)
    wal = bytearray((copy / "entries.wal").read_bytes())
    wal[-10] ^= 0x20  # inside the last entry
    (copy / "entries.wal").write_bytes(bytes(wal))
    code, _, err = run("verify", "--log", str(copy), "--vkey", vkey)
    assert code == 3
    assert "entry 7" in err


def test_verify_with_the_wrong_key_fails(log: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    run("init", "--log", str(other), "--origin", ORIGIN)
    code, _, err = run("verify", "--log", str(log), "--vkey", str(other / "log.vkey"))
    assert code == 3
    assert "not signed by any trusted key" in err


def test_log_filters_and_formats(log: Path) -> None:
    code, out, _ = run("log", "--log", str(log), "--tenant", "clinic", "-o", "json")
    assert code == 0
    assert [e["index"] for e in json.loads(out)] == [5, 6, 7]
    code, out, _ = run(
        "log",
        "--log",
        str(log),
        "--action",
        "dataset",
        "--actor",
        "user1@bank.example",
        "-o",
        "csv",
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("index,time,action,actor")
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "4", "7"]
    code, out, _ = run("log", "--log", str(log), "--since", "2999-01-01T00:00:00Z", "-o", "json")
    assert json.loads(out) == []
    code, out, _ = run("show", "--log", str(log), "--tenant", "clinic")
    assert code == 0
    assert "claims-5" in out


def test_entry_prove_and_verify_proof(log: Path, tmp_path: Path) -> None:
    code, raw, _ = run("entry", "--log", str(log), "--index", "3", "--raw")
    assert code == 0
    assert json.loads(raw)["index"] == 3
    code, proof, _ = run("prove", "--log", str(log), "--index", "3")
    assert proof.startswith("c2sp.org/tlog-proof@v1\nindex 3\n")
    (tmp_path / "entry").write_text(raw)
    (tmp_path / "proof").write_text(proof)
    vkey = str(log / "log.vkey")
    args = [
        "verify-proof",
        "--proof",
        str(tmp_path / "proof"),
        "--entry",
        str(tmp_path / "entry"),
        "--vkey",
        vkey,
    ]
    code, out, _ = run(*args)
    assert code == 0, out
    (tmp_path / "entry").write_text(raw.replace('"index":3', '"index":4'))
    assert run(*args)[0] == 3
    (tmp_path / "entry").write_text(raw)
    (tmp_path / "proof").write_text("garbage")
    code, _, err = run(*args)
    assert code == 3
    assert "does not verify" in err
    assert run("entry", "--log", str(log), "--index", "99")[0] == 1


def test_consistency_with_an_older_checkpoint(log: Path, tmp_path: Path) -> None:
    code, saved, _ = run("checkpoint", "--log", str(log))
    assert saved.startswith(f"{ORIGIN}\n8\n")
    (tmp_path / "old").write_text(saved)
    backup = tmp_path / "backup"
    shutil.copytree(log, backup)
    run("append", "--log", str(log), stdin=_events(4, 8))
    code, out, err = run(
        "consistency",
        "--log",
        str(log),
        "--old",
        str(tmp_path / "old"),
        "--vkey",
        str(log / "log.vkey"),
    )
    assert code == 0, err
    assert out.strip()  # the proof hashes
    (tmp_path / "new").write_text(run("checkpoint", "--log", str(log))[1])
    code, _, err = run(
        "consistency",
        "--log",
        str(backup),
        "--old",
        str(tmp_path / "new"),
        "--vkey",
        str(log / "log.vkey"),
    )
    assert code == 3
    assert "rollback" in err
    code, _, err = run(
        "verify",
        "--log",
        str(backup),
        "--vkey",
        str(log / "log.vkey"),
        "--trusted",
        str(tmp_path / "new"),
    )
    assert code == 3
    assert "entry 8" in err


def test_export_and_vkey(log: Path) -> None:
    code, out, _ = run("export", "--log", str(log), "--format", "jsonl")
    assert [json.loads(line)["index"] for line in out.splitlines()] == list(range(8))
    code, out, _ = run("export", "--log", str(log), "--format", "csv")
    assert code == 0
    assert len(out.splitlines()) == 9
    code, out, _ = run("vkey", "--log", str(log))
    assert code == 0
    assert out == (log / "log.vkey").read_text()
